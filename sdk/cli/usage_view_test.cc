#include "sdk/cli/usage_view.h"

#include <string>

#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

namespace v1 = ::ferry::control::v1;

TEST(ParseDurationSecondsTest, Units) {
  EXPECT_EQ(*ParseDurationSeconds("90s"), 90);
  EXPECT_EQ(*ParseDurationSeconds("15m"), 900);
  EXPECT_EQ(*ParseDurationSeconds("2h"), 7200);
  EXPECT_EQ(*ParseDurationSeconds("1d"), 86400);
  EXPECT_EQ(*ParseDurationSeconds("1h30m"), 5400);
  for (const char* bad : {"", "15", "m", "15x", "-5m", "0s", "1.5h", "15m3"}) {
    auto d = ParseDurationSeconds(bad);
    EXPECT_FALSE(d.ok()) << bad;
    if (!d.ok()) {
      EXPECT_NE(d.status().message().find("90s, 15m"), std::string::npos);
    }
  }
}

v1::GetUsageResponse Sample() {
  v1::GetUsageResponse u;
  v1::UsageSummary* a = u.add_functions();
  a->set_function("echo");
  a->set_requests(2000);
  a->set_cpu_us(1'234'567);
  a->set_cost(0.0002);
  a->set_cost_per_million(0.1);
  a->set_p50_ms(0.05);
  a->set_p99_ms(0.25);
  a->set_has_max_cost_per_million(true);
  a->set_max_cost_per_million(0.4);
  v1::UsageSummary* b = u.add_functions();
  b->set_function("mlp");
  b->set_requests(10);
  b->set_gpu_us(2'000);
  b->set_cost(0.00002);
  b->set_cost_per_million(2.0);
  b->set_has_max_cost_per_million(true);
  b->set_max_cost_per_million(1.0);
  b->set_over_budget(true);
  v1::UsageSummary* n = u.add_nodes();
  n->set_function("echo");
  n->set_node_id("cpu1");
  n->set_requests(2000);
  u.mutable_total()->set_requests(2010);
  return u;
}

TEST(FormatUsageTableTest, ShowsBudgetAndMarksOverBudget) {
  const std::string table = FormatUsageTable(Sample());
  EXPECT_NE(table.find("FUNCTION"), std::string::npos) << table;
  EXPECT_NE(table.find("MAX/1M"), std::string::npos);
  // CPU-seconds to the millisecond.
  EXPECT_NE(table.find("1.235"), std::string::npos) << table;
  const size_t echo = table.find("echo");
  const size_t mlp = table.find("mlp");
  ASSERT_NE(echo, std::string::npos);
  ASSERT_NE(mlp, std::string::npos);
  const std::string echo_line = table.substr(echo, table.find('\n', echo) - echo);
  const std::string mlp_line = table.substr(mlp, table.find('\n', mlp) - mlp);
  EXPECT_NE(echo_line.find("ok"), std::string::npos) << echo_line;
  EXPECT_NE(echo_line.find("$0.4"), std::string::npos) << echo_line;
  EXPECT_NE(mlp_line.find("OVER"), std::string::npos) << mlp_line;
  EXPECT_NE(table.find("TOTAL"), std::string::npos);
}

TEST(UsageToJsonTest, NumbersAndNodes) {
  const nlohmann::json j = UsageToJson(Sample());
  ASSERT_EQ(j["functions"].size(), 2u);
  EXPECT_EQ(j["functions"][0]["function"], "echo");
  EXPECT_EQ(j["functions"][0]["requests"], 2000);
  EXPECT_EQ(j["functions"][0]["cpu_us"], 1'234'567);
  EXPECT_DOUBLE_EQ(j["functions"][0]["cpu_seconds"].get<double>(), 1.234567);
  EXPECT_EQ(j["functions"][0]["nodes"].size(), 1u);
  EXPECT_EQ(j["functions"][0]["nodes"][0]["node"], "cpu1");
  EXPECT_EQ(j["functions"][1]["over_budget"], true);
  EXPECT_EQ(j["total"]["requests"], 2010);
}

}  // namespace
}  // namespace ferry::cli
