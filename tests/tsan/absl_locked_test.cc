// Correctly synchronised hand-offs through every absl::Mutex entry point ferry and its libraries
// use: Lock/Unlock (MutexLock), ReaderLock, TryLock, CondVar waits, Await, LockWhen and
// Notification (waits and HasBeenNotified). With the shim (absl_mutex_shim.cc) TSan must stay
// silent; built without it the same program is reported as racy, which the ctest also checks, so
// the shim is what makes the difference.
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

constexpr int kItems = 200;

// A producer/consumer queue of plain ints guarded by one mutex, handed over with CondVar.
class Channel {
 public:
  void Put(int v) {
    absl::MutexLock lock(&mu_);
    items_.push_back(v);
    cv_.Signal();
  }
  int Take() {
    absl::MutexLock lock(&mu_);
    while (items_.empty()) cv_.WaitWithTimeout(&mu_, absl::Seconds(1));
    const int v = items_.back();
    items_.pop_back();
    return v;
  }

 private:
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::vector<int> items_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int main() {
  // 1. CondVar hand-off of heap objects: the consumer reads what the producer wrote.
  Channel channel;
  std::vector<int*> boxes(kItems);
  std::thread producer([&] {
    for (int i = 0; i < kItems; ++i) {
      boxes[i] = new int(i);
      channel.Put(i);
    }
  });
  long sum = 0;
  for (int i = 0; i < kItems; ++i) {
    const int idx = channel.Take();
    sum += *boxes[idx];
    delete boxes[idx];
  }
  producer.join();

  // 2. Await / LockWhen on a Condition, TryLock and reader locks around a plain counter.
  absl::Mutex mu;
  int value = 0;  // guarded by mu
  bool ready = false;
  std::thread writer([&] {
    for (int i = 0; i < kItems; ++i) {
      while (!mu.TryLock()) {
      }
      ++value;
      mu.Unlock();
    }
    absl::MutexLock lock(&mu);
    ready = true;
  });
  {
    mu.LockWhen(absl::Condition(&ready));
    mu.Unlock();
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&ready));
  }
  int seen = 0;
  {
    absl::ReaderMutexLock lock(&mu);
    seen = value;
  }
  writer.join();

  // 3. Notification publishes a plain write.
  int published = 0;
  absl::Notification done;
  std::thread notifier([&] {
    published = 42;
    done.Notify();
  });
  done.WaitForNotification();
  int got = published;
  notifier.join();

  // 4. ... and so does its lock-free HasBeenNotified().
  int polled = 0;
  absl::Notification flag;
  std::thread flagger([&] {
    polled = 7;
    flag.Notify();
  });
  while (!flag.HasBeenNotified()) {
  }
  got += polled;
  flagger.join();

  std::printf("sum=%ld seen=%d got=%d\n", sum, seen, got);
  const bool ok =
      sum == static_cast<long>(kItems) * (kItems - 1) / 2 && seen == kItems && got == 49;
  return ok ? 0 : 1;
}
