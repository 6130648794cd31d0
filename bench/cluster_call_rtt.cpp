// Round trip of a cluster call (NATS request/reply through the queue group) to a worker's
// "whoami" handler: N sequential calls, p50 and p99 in microseconds, as JSON.
//   bench-call-rtt URL [calls]
#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench-call-rtt nats://HOST:PORT [calls]\n");
    return 2;
  }
  int calls = argc > 2 ? std::atoi(argv[2]) : 5000;
  natsConnection* nc = nullptr;
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  natsOptions_SetURL(opts, argv[1]);
  natsOptions_SetSendAsap(opts, true);  // as the workers do
  if (natsConnection_Connect(&nc, opts) != NATS_OK) {
    std::fprintf(stderr, "bench-call-rtt: cannot connect to %s\n", argv[1]);
    return 1;
  }
  std::vector<double> us;
  for (int i = 0; i < calls + 200; ++i) {
    natsMsg* reply = nullptr;
    auto t0 = std::chrono::steady_clock::now();
    natsStatus s = natsConnection_RequestString(&reply, nc, "loopfleet.call.whoami", "", 2000);
    auto t1 = std::chrono::steady_clock::now();
    if (s != NATS_OK) {
      std::fprintf(stderr, "bench-call-rtt: call failed: %s\n", natsStatus_GetText(s));
      return 1;
    }
    natsMsg_Destroy(reply);
    if (i >= 200) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::printf("{\"p50_us\": %.1f, \"p99_us\": %.1f, \"calls\": %d}\n", us[us.size() / 2], us[us.size() * 99 / 100], calls);
  natsConnection_Destroy(nc);
}
