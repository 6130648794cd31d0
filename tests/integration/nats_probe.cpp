// What the integration tests do to NATS behind the nodes' backs, with nats.c:
//
// `nats_probe put URL BUCKET KEY VALUE` puts one value in a key-value bucket (a heartbeat no
// node would write, for the front's bad-input test, tests/integration/test_front.py).
//
// A job consumer that loses track of what it delivered, made on purpose: `nats_probe strand
// URL NAME N` creates the durable consumer loopfleet_NAME with one delivery per message and a
// 1 s ack wait, fetches N jobs and never acks them. After the ack wait they are stored,
// delivered and no longer awaited: what a JetStream consumer can leave behind when nodes die,
// and what the node agent's sweeper must find (tests/integration/test_durability.py).
#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace {

int put(const char* url, const char* bucket, const char* key, const char* value) {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  kvStore* kv = nullptr;
  std::uint64_t revision = 0;
  bool ok = natsConnection_ConnectTo(&nc, url) == NATS_OK && natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
            js_KeyValue(&kv, js, bucket) == NATS_OK && kvStore_PutString(&revision, kv, key, value) == NATS_OK;
  if (!ok) std::fprintf(stderr, "nats_probe: cannot put %s in bucket %s at %s\n", key, bucket, url);
  if (kv) kvStore_Destroy(kv);
  if (js) jsCtx_Destroy(js);
  if (nc) natsConnection_Destroy(nc);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "put") return put(argv[2], argv[3], argv[4], argv[5]);
  if (argc != 5 || std::string(argv[1]) != "strand") {
    std::fprintf(stderr, "usage: nats_probe strand URL NAME N | nats_probe put URL BUCKET KEY VALUE\n");
    return 2;
  }
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, argv[2]) != NATS_OK) {
    std::fprintf(stderr, "nats_probe: cannot connect to %s\n", argv[2]);
    return 1;
  }
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, nc, nullptr);
  std::string name = argv[3], subject = "loopfleet.job." + name, durable = "loopfleet_" + name;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = "LOOPFLEET_JOBS";
  so.Config.AckPolicy = js_AckExplicit;
  so.Config.AckWait = 1000LL * 1000 * 1000;
  so.Config.MaxDeliver = 1;
  natsSubscription* sub = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_PullSubscribe(&sub, js, subject.c_str(), durable.c_str(), nullptr, &so, &err) != NATS_OK) {
    std::fprintf(stderr, "nats_probe: cannot create %s (JetStream error %d)\n", durable.c_str(), static_cast<int>(err));
    return 1;
  }
  int want = std::atoi(argv[4]), got = 0;
  while (got < want) {
    natsMsgList list{};
    if (natsSubscription_Fetch(&list, sub, want - got, 5000, &err) != NATS_OK) break;
    got += list.Count;
    natsMsgList_Destroy(&list);  // never acked
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the ack wait: given up
  std::printf("stranded %d\n", got);
  natsSubscription_Destroy(sub);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return got == want ? 0 : 1;
}
