#include "ferry/flag_spelling.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Normalize(std::vector<std::string> in) {
  std::vector<char*> argv;
  for (std::string& s : in) argv.push_back(s.data());
  DashedFlagArgs args(static_cast<int>(argv.size()), argv.data());
  return std::vector<std::string>(args.argv(), args.argv() + args.argc());
}

TEST(DashedFlagArgsTest, FlagNamesOnly) {
  EXPECT_THAT(Normalize({"ferry-agent", "--http-port=8000", "--max-body-bytes", "1-2", "-v",
                         "--state-dir=a-b", "pos-arg", "--", "--not-a-flag"}),
              ElementsAre("ferry-agent", "--http_port=8000", "--max_body_bytes", "1-2", "-v",
                          "--state_dir=a-b", "pos-arg", "--", "--not-a-flag"));
  // The program name is never touched, even when it looks like a flag.
  EXPECT_THAT(Normalize({"--odd-name", "--a-b"}), ElementsAre("--odd-name", "--a_b"));
}

}  // namespace
}  // namespace ferry
