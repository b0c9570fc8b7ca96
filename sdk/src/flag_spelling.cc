#include "ferry/flag_spelling.h"

#include <algorithm>

namespace ferry {

DashedFlagArgs::DashedFlagArgs(int argc, char** argv) : args_(argv, argv + argc) {
  bool flags_ended = false;
  for (size_t k = 1; k < args_.size(); ++k) {
    std::string& a = args_[k];
    if (a == "--") flags_ended = true;
    if (flags_ended || a.rfind("--", 0) != 0) continue;
    const size_t end = std::min(a.find('='), a.size());
    std::replace(a.begin() + 2, a.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
  }
  pointers_.reserve(args_.size());
  for (std::string& a : args_) pointers_.push_back(a.data());
}

}  // namespace ferry
