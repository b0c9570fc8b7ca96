// A real data race: two threads write one int with no synchronisation. Under the TSan build this
// program must produce a "data race" report (the ctest checks for it); if it does not, TSan is
// not working in this build and a clean run of the other tests proves nothing.
#include <cstdio>
#include <thread>

namespace {

int counter = 0;

// noinline keeps the writes as plain stores the compiler cannot merge or hoist.
__attribute__((noinline)) void Bump() {
  for (int i = 0; i < 1000; ++i) counter = counter + 1;
}

}  // namespace

int main() {
  std::thread a(Bump);
  std::thread b(Bump);
  a.join();
  b.join();
  std::printf("counter=%d\n", counter);
  return 0;
}
