// The engine's own limit for bench/workflows.py: N messages through a JetStream work queue
// with nothing of loopfleet in the way. One connection publishes them asynchronously (as
// `loopfleet job submit --count` does); two others, like two workers, fetch batches from one
// durable pull consumer and ack each message. Prints {"jobs_per_s": ...} once all are acked.
//   bench-jetstream-raw nats://HOST:PORT N REPLICAS
#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

natsConnection* connect(const char* url) {
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, url) != NATS_OK) {
    std::fprintf(stderr, "bench-jetstream-raw: cannot connect to %s\n", url);
    std::exit(1);
  }
  return nc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: bench-jetstream-raw nats://HOST:PORT N REPLICAS\n");
    return 2;
  }
  const char* url = argv[1];
  const int n = std::atoi(argv[2]);
  const int replicas = std::atoi(argv[3]);
  const std::string stream = "RAW_" + std::to_string(getpid());
  const std::string subject = "raw." + std::to_string(getpid());

  natsConnection* pub = connect(url);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4000;
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, pub, &jo);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream.c_str();
  const char* subjects[] = {subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Retention = js_WorkQueuePolicy;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = replicas;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_AddStream(nullptr, js, &cfg, nullptr, &err) != NATS_OK) {
    std::fprintf(stderr, "bench-jetstream-raw: cannot create stream %s (JetStream error %d)\n", stream.c_str(), err);
    return 1;
  }
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = "raw";
  cc.AckPolicy = js_AckExplicit;
  cc.MaxAckPending = 20000;
  cc.AckWait = 4'000'000'000;  // as loopfleet's job consumers
  if (js_AddConsumer(nullptr, js, stream.c_str(), &cc, nullptr, &err) != NATS_OK) {
    std::fprintf(stderr, "bench-jetstream-raw: cannot create the consumer (JetStream error %d)\n", err);
    return 1;
  }

  std::atomic<int> acked{0};
  auto began = std::chrono::steady_clock::now();
  std::vector<std::thread> consumers;
  for (int c = 0; c < 2; ++c) {
    consumers.emplace_back([&] {
      natsConnection* nc = connect(url);
      jsCtx* cjs = nullptr;
      natsConnection_JetStream(&cjs, nc, nullptr);
      natsSubscription* sub = nullptr;
      jsErrCode e = static_cast<jsErrCode>(0);
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = stream.c_str();
      so.Consumer = "raw";
      if (js_PullSubscribe(&sub, cjs, subject.c_str(), "raw", nullptr, &so, &e) != NATS_OK) {
        std::fprintf(stderr, "bench-jetstream-raw: cannot bind to the consumer (JetStream error %d)\n", e);
        std::exit(1);
      }
      while (acked.load() < n) {
        natsMsgList list{};
        natsSubscription_Fetch(&list, sub, 256, 500, &e);
        for (int i = 0; i < list.Count; ++i) natsMsg_Ack(list.Msgs[i], nullptr);
        acked += list.Count;
        natsMsgList_Destroy(&list);
      }
      natsConnection_FlushTimeout(nc, 5000);
      natsSubscription_Destroy(sub);
      jsCtx_Destroy(cjs);
      natsConnection_Destroy(nc);
    });
  }
  for (int i = 0; i < n; ++i) {
    char body[32];
    int len = std::snprintf(body, sizeof body, "x-%d", i);
    js_PublishAsync(js, subject.c_str(), body, len, nullptr);
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60000;
  js_PublishAsyncComplete(js, &po);
  for (auto& t : consumers) t.join();
  // Done when the server has taken every ack (the work queue is empty), as loopfleet's figure
  // counts completed jobs from the stream's state.
  for (;;) {
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &err) == NATS_OK) {
      bool empty = si->State.Msgs == 0;
      jsStreamInfo_Destroy(si);
      if (empty) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  js_DeleteStream(js, stream.c_str(), nullptr, &err);
  std::printf("{\"jobs_per_s\": %.0f, \"jobs\": %d, \"seconds\": %.3f}\n", n / seconds, n, seconds);
  jsCtx_Destroy(js);
  natsConnection_Destroy(pub);
  return 0;
}
