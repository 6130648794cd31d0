// The pure parts of a cluster node: its nats-server config and how publish failures are read.
#include "cluster/node.hpp"

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
