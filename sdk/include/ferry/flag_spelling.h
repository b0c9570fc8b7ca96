// Lets ferry's binaries accept the conventional dashed flag spelling (--http-port) as well as
// abseil's underscored one (--http_port).
#ifndef FERRY_FLAG_SPELLING_H_
#define FERRY_FLAG_SPELLING_H_

#include <string>
#include <vector>

namespace ferry {

// A copy of argv in which every flag name ("--a-b" or "--a-b=value") has its dashes turned into
// underscores; values, positional arguments and everything after a bare "--" are left as they
// are. Owns the strings; argv() stays valid while the object lives. Not thread-safe.
class DashedFlagArgs {
 public:
  DashedFlagArgs(int argc, char** argv);
  DashedFlagArgs(const DashedFlagArgs&) = delete;
  DashedFlagArgs& operator=(const DashedFlagArgs&) = delete;

  int argc() const { return static_cast<int>(pointers_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> pointers_;
};

}  // namespace ferry

#endif  // FERRY_FLAG_SPELLING_H_
