// The pure parts of a cluster node: its nats-server config and how publish failures are read.
#include "cluster/node.hpp"
#include "cluster/sweeper.hpp"

#include <boost/json/parse.hpp>

#include <gtest/gtest.h>

using namespace loopfleet::cluster;
using std::chrono::milliseconds;

TEST(ServerConfig, StandaloneWithAStoreLimit) {
  auto c = server_config({"n1", "127.0.0.1:4222", "127.0.0.1:6222", {}, "/data/js", 64});
  EXPECT_NE(c.find("server_name: \"n1\""), std::string::npos);
  EXPECT_NE(c.find("max_file_store: 64MB"), std::string::npos);
  EXPECT_EQ(c.find("cluster {"), std::string::npos);  // no peers: JetStream runs standalone
}

TEST(ServerConfig, PeersBecomeRoutesAndNoLimitMeansTheServerDefault) {
  auto c = server_config({"n2", "127.0.0.1:4223", "127.0.0.1:6223", {"127.0.0.1:6222", "10.0.0.3:6222"}, "/js", 0});
  EXPECT_NE(c.find("\"nats-route://127.0.0.1:6222\""), std::string::npos);
  EXPECT_NE(c.find("\"nats-route://10.0.0.3:6222\""), std::string::npos);
  EXPECT_EQ(c.find("max_file_store"), std::string::npos);
}

TEST(PublishFailure, StorageFullPassesAndNamesTheFix) {
  auto f = describe_publish_failure(NATS_ERR, JSInsufficientResourcesErr, "(js.c:535): insufficient resources");
  EXPECT_TRUE(f.transient);
  EXPECT_EQ(f.why.find("js.c"), std::string::npos);  // nats.c's source position is not the user's business
  EXPECT_NE(f.why.find("JetStream storage is full (insufficient resources)"), std::string::npos);
  EXPECT_NE(f.why.find("--max-store"), std::string::npos);
  EXPECT_TRUE(describe_publish_failure(NATS_ERR, JSStorageResourcesExceededErr, "").transient);
}

TEST(PublishFailure, ElectionsTimeoutsAndMissingStreamsPass) {
  EXPECT_TRUE(describe_publish_failure(NATS_ERR, JSClusterNotAvailErr, "").transient);
  EXPECT_TRUE(describe_publish_failure(NATS_TIMEOUT, static_cast<jsErrCode>(0), "").transient);
  EXPECT_TRUE(describe_publish_failure(NATS_NO_RESPONDERS, static_cast<jsErrCode>(0), "").transient);
}

TEST(PublishFailure, OtherErrorsFailAtOnce) {
  auto big = describe_publish_failure(NATS_MAX_PAYLOAD, static_cast<jsErrCode>(0), "");
  EXPECT_FALSE(big.transient);
  EXPECT_NE(big.why.find("max_payload"), std::string::npos);
  auto other = describe_publish_failure(NATS_ERR, JSStreamNotFoundErr, "stream not found");
  EXPECT_FALSE(other.transient);
  EXPECT_NE(other.why.find("stream not found"), std::string::npos);
}

TEST(RetryDelay, DoublesFromFiftyMillisecondsToTwoSeconds) {
  EXPECT_EQ(retry_delay(0), milliseconds(50));
  EXPECT_EQ(retry_delay(1), milliseconds(100));
  EXPECT_EQ(retry_delay(5), milliseconds(1600));
  EXPECT_EQ(retry_delay(6), milliseconds(2000));
  EXPECT_EQ(retry_delay(1000), milliseconds(2000));
}

TEST(Replicas, DefaultIsOnePerNodeUpToThree) {
  EXPECT_EQ(replicas_for(0), 1);
  EXPECT_EQ(replicas_for(1), 2);
  EXPECT_EQ(replicas_for(2), 3);
  EXPECT_EQ(replicas_for(6), 3);
}

TEST(Replicas, OnlyThePromisedCountUntilThePatienceRunsOut) {
  replica_settings r{3, milliseconds(30000)};
  EXPECT_EQ(replicas_to_try(r, milliseconds(0)), std::vector<int>{3});
  EXPECT_EQ(replicas_to_try(r, milliseconds(29999)), std::vector<int>{3});
  EXPECT_EQ(replicas_to_try(r, milliseconds(30000)), (std::vector<int>{3, 2, 1}));  // exactly at the limit
  replica_settings forever{3, milliseconds(0)};
  EXPECT_EQ(replicas_to_try(forever, milliseconds(3600000)), std::vector<int>{3});
  EXPECT_EQ(replicas_to_try({0, milliseconds(0)}, milliseconds(0)), std::vector<int>{1});  // never zero
}

TEST(Replicas, QuorumIsALeaderAndAMajorityInSync) {
  EXPECT_TRUE((durability{"S", "stream", 3, 3, 3, true, {}}.quorum()));
  EXPECT_TRUE((durability{"S", "stream", 3, 3, 2, true, {}}.quorum()));    // one server lost
  EXPECT_FALSE((durability{"S", "stream", 3, 3, 1, true, {}}.quorum()));   // two lost: a stale leader
  EXPECT_FALSE((durability{"S", "stream", 3, 2, 1, true, {}}.quorum()));   // two replicas, one lost: stalled
  EXPECT_FALSE((durability{"S", "stream", 3, 3, 2, false, {}}.quorum()));  // electing
  EXPECT_TRUE((durability{"S", "stream", 1, 1, 1, true, {}}.quorum()));
}

TEST(Replicas, DescriptionSaysWhatIsMissing) {
  auto full = describe({"LOOPFLEET_JOBS", "stream", 3, 3, 3, true, {}});
  EXPECT_EQ(full, "stream LOOPFLEET_JOBS: 3 of 3 replicas, 3 in sync, quorum");
  auto small = describe({"LOOPFLEET_JOBS", "stream", 3, 2, 2, true, {}});
  EXPECT_NE(small.find("2 of 3 replicas"), std::string::npos);
  EXPECT_NE(small.find("fewer replicas than promised"), std::string::npos);
  auto placed = describe({"LOOPFLEET_JOBS", "stream", 3, 3, 2, true, "n1 (leader), n2, n3 (offline)"});
  EXPECT_EQ(placed, "stream LOOPFLEET_JOBS: 3 of 3 replicas, 2 in sync, quorum; on n1 (leader), n2, n3 (offline)");
  auto stalled = describe({"loopfleet_work", "consumer", 3, 0, 0, false, {}});
  EXPECT_NE(stalled.find("no quorum"), std::string::npos);
}

TEST(Replicas, ThePromiseTravelsInTheStreamDescription) {
  EXPECT_EQ(wanted_replicas(replicas_description(3).c_str(), 1), 3);
  EXPECT_EQ(wanted_replicas(nullptr, 2), 2);          // a stream made by an older loopfleet
  EXPECT_EQ(wanted_replicas("something else", 1), 1);
  EXPECT_EQ(wanted_replicas("loopfleet: replicas wanted x", 1), 1);
}

TEST(StrandedJobs, OnlyAJobDeliveredLongerAgoThanEveryAttemptCouldTake) {
  using std::chrono::seconds;
  // 5 attempts of 30 s, each followed by the 4 s ack wait, the 5 s dead-letter pause, 10 s margin.
  EXPECT_EQ(stored_lifetime(5, milliseconds(30000)), milliseconds(5 * 34000 + 15000));
  EXPECT_EQ(stored_lifetime(0, milliseconds(1000)), milliseconds(5000 + 15000));  // at least one attempt
  stored_job j{7, seconds(21), true, 1, milliseconds(1000)};
  EXPECT_TRUE(stranded(j));
  j.age = seconds(20);
  EXPECT_FALSE(stranded(j));  // exactly at the bound: an attempt may still end now
  j.age = seconds(3600);
  j.delivered = false;  // old but never delivered: waiting for a worker, not stranded
  EXPECT_FALSE(stranded(j));
}

TEST(ConsumerRaiser, TheLiveNodeFirstByName) {
  auto nodes = boost::json::parse(R"([{"node": "n2", "state": "up"}, {"node": "n1", "state": "down"},
                                      {"node": "n3", "state": "up"}, {"state": "up"}, 7])").as_array();
  EXPECT_EQ(consumer_raiser(nodes), "n2");  // n1 is down: it raises nothing
  nodes[1].as_object()["state"] = "up";
  EXPECT_EQ(consumer_raiser(nodes), "n1");
  EXPECT_EQ(consumer_raiser(boost::json::array{}), "");  // the bucket unread: nobody, this round
}
