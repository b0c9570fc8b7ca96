#include "sdk/cli/cli_util.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace ferry::cli {
namespace {

namespace fs = std::filesystem;

TEST(FormatTableTest, AlignsColumnsWithoutTrailingBlanks) {
  EXPECT_EQ(FormatTable({{"NAME", "READY", "NODES"}, {"wordfilter", "1/1", "a"}, {"e", "10/10"}}),
            "NAME         READY   NODES\n"
            "wordfilter   1/1     a\n"
            "e            10/10\n");
  EXPECT_EQ(FormatTable({}), "");
}

TEST(ToYamlTest, NestedValuesAndQuoting) {
  const auto j = nlohmann::json::parse(
      R"({"functions":[{"name":"echo","ready":1,"tags":["a","true"],"empty":{}}],"on":"yes"})");
  EXPECT_EQ(ToYaml(j),
            "functions:\n"
            "- empty: {}\n"
            "  name: echo\n"
            "  ready: 1\n"
            "  tags:\n"
            "  - a\n"
            "  - \"true\"\n"
            "\"on\": \"yes\"\n");
}

TEST(CollectManifestsTest, FolderAndFileWithItsSloSiblings) {
  const fs::path dir = fs::path(testing::TempDir()) / "ferry_cli_collect";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto write = [&](const char* name, const char* text) { std::ofstream(dir / name) << text; };
  write("b.yaml", "kind: Function\nmetadata: {name: b}\n");
  write("a.slo.yaml", "kind: SLO\nmetadata: {name: a}\n");
  write("c.yaml", "kind: Function\nmetadata: {name: c}\n");
  write("notes.txt", "not a manifest");

  auto all = CollectManifests(dir.string());
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(fs::path((*all)[0].path).filename(), "a.slo.yaml");
  EXPECT_TRUE(fs::path((*all)[0].path).is_absolute());

  auto one = CollectManifests((dir / "b.yaml").string());
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 2u);  // b.yaml and the SLO next to it, not c.yaml
  EXPECT_EQ(fs::path((*one)[0].path).filename(), "b.yaml");
  EXPECT_EQ(fs::path((*one)[1].path).filename(), "a.slo.yaml");

  EXPECT_FALSE(CollectManifests((dir / "missing.yaml").string()).ok());
  fs::create_directories(dir / "empty");
  EXPECT_FALSE(CollectManifests((dir / "empty").string()).ok());
}

TEST(AddressTest, HostPortAndUrls) {
  EXPECT_EQ(*SplitHostPort("127.0.0.1:7070"), std::make_pair(std::string("127.0.0.1"), 7070));
  EXPECT_EQ(*SplitHostPort("[::1]:80"), std::make_pair(std::string("::1"), 80));
  EXPECT_FALSE(SplitHostPort("nohost").ok());
  EXPECT_FALSE(SplitHostPort("h:99999").ok());
  EXPECT_EQ(*ParseHttpUrl("http://localhost:8000/v2"),
            std::make_pair(std::string("localhost"), 8000));
  EXPECT_EQ(*ParseHttpUrl("gw"), std::make_pair(std::string("gw"), 80));
  EXPECT_FALSE(ParseHttpUrl("https://x:1").ok());
}

}  // namespace
}  // namespace ferry::cli
