// Makes absl::Mutex visible to ThreadSanitizer.
//
// Debian's abseil is not built with -fsanitize=thread, so its Mutex synchronises through atomics
// and futexes that TSan never sees: every hand-off under an absl::Mutex (a batcher queue, a gRPC
// reactor) shows as a data race. This shared library is linked first into every executable of
// the TSan build (FERRY_TSAN=ON), so its definitions of the Mutex / CondVar / Notification entry
// points interpose on libabsl_synchronization's, for ferry's calls and for abseil's own calls
// through the PLT (Notification, ReleasableMutexLock). Each wrapper brackets the real function,
// found with dlsym(RTLD_NEXT), with the TSan mutex annotations; between pre_* and post_* TSan
// ignores memory accesses, so Condition callbacks that abseil evaluates inside Lock/Unlock are not
// reported.
//
// Waits (CondVar::Wait*, Mutex::Await*) release and re-acquire the mutex: they are reported as an
// unlock, then a lock that blocks for the whole wait.
//
// ~Mutex is deliberately not annotated: TSan treats a destroy as a write to the mutex, and gRPC
// destroys its mutexes after dropping atomic reference counts that TSan cannot see, which would
// be reported as races. Heap mutexes lose their TSan state when freed anyway.
//
// Built only for the TSan build; it must never be linked into a normal binary.

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

#if !ABSL_OPTION_USE_INLINE_NAMESPACE
#error "the mangled names below assume abseil's inline namespace"
#endif
#define FERRY_SHIM_STR2(x) #x
#define FERRY_SHIM_STR(x) FERRY_SHIM_STR2(x)

// Itanium mangling of "absl::<inline namespace>::" as the start of a nested name ("_ZNK" for a
// const member function).
std::string AbslPrefix(bool is_const) {
  const std::string ns = FERRY_SHIM_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return (is_const ? "_ZNK4absl" : "_ZN4absl") + std::to_string(ns.size()) + ns;
}

// The next definition of `mangled_suffix` after this library (libabsl_synchronization's).
template <typename Fn>
Fn Real(const char* mangled_suffix, bool is_const = false) {
  const std::string name = AbslPrefix(is_const) + mangled_suffix;
  void* sym = dlsym(RTLD_NEXT, name.c_str());
  if (sym == nullptr) {
    std::fprintf(stderr, "ferry tsan absl shim: %s not found: %s\n", name.c_str(), dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(sym);
}

// The Mutex's only data member is its state word; abseil's kMuWriter bit says it is held
// exclusively. Waits need the mode to report the matching unlock and re-lock.
unsigned ModeFlags(const absl::Mutex* mu) {
  constexpr intptr_t kMuWriter = 0x0008;
  const auto* state = reinterpret_cast<const std::atomic<intptr_t>*>(mu);
  return (state->load(std::memory_order_relaxed) & kMuWriter) != 0 ? 0 : __tsan_mutex_read_lock;
}

// Runs `wait` (which releases `mu` and re-acquires it before returning) as unlock + lock.
template <typename F>
auto AnnotatedWait(absl::Mutex* mu, F wait) {
  const unsigned mode = ModeFlags(mu);
  __tsan_mutex_pre_unlock(mu, mode);
  __tsan_mutex_post_unlock(mu, mode);
  __tsan_mutex_pre_lock(mu, mode);
  auto result = wait();
  __tsan_mutex_post_lock(mu, mode, 0);
  return result;
}

// Runs `lock`, which returns with `mu` held in `mode` whatever it returns.
template <typename F>
auto AnnotatedLock(absl::Mutex* mu, unsigned mode, F lock) {
  __tsan_mutex_pre_lock(mu, mode);
  auto result = lock();
  __tsan_mutex_post_lock(mu, mode, 0);
  return result;
}

template <typename F>
bool AnnotatedTryLock(absl::Mutex* mu, unsigned mode, F try_lock) {
  __tsan_mutex_pre_lock(mu, mode | __tsan_mutex_try_lock);
  const bool locked = try_lock();
  __tsan_mutex_post_lock(
      mu, mode | __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  return locked;
}

template <typename F>
void AnnotatedUnlock(absl::Mutex* mu, unsigned mode, F unlock) {
  __tsan_mutex_pre_unlock(mu, mode);
  unlock();
  __tsan_mutex_post_unlock(mu, mode);
}

// Notification's fast paths (an already-notified flag) never touch its Mutex, and its inline
// HasBeenNotified() is an acquire load of that flag in instrumented code. So Notify also releases
// on the flag's address (the member after the Mutex) and on the object; the waits acquire.
void* NotifiedFlag(const absl::Notification* n) {
  static_assert(sizeof(absl::Notification) > sizeof(absl::Mutex));
  return const_cast<char*>(reinterpret_cast<const char*>(n)) + sizeof(absl::Mutex);
}

// abseil calls its own entry points through the PLT (AwaitWithTimeout calls AwaitWithDeadline,
// Notification locks its Mutex), which lands in this shim again. Only the outermost call on a
// thread is annotated; nested ones go straight to abseil.
thread_local int shim_depth = 0;
class ShimScope {
 public:
  ShimScope() { ++shim_depth; }
  ~ShimScope() { --shim_depth; }
  ShimScope(const ShimScope&) = delete;
  ShimScope& operator=(const ShimScope&) = delete;
};

using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Time;

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex4LockEv");
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  AnnotatedLock(this, 0, [&] { return (real(this), 0); });
}

void Mutex::ReaderLock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex10ReaderLockEv");
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  AnnotatedLock(this, __tsan_mutex_read_lock, [&] { return (real(this), 0); });
}

bool Mutex::TryLock() {
  static auto real = Real<bool (*)(Mutex*)>("5Mutex7TryLockEv");
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  return AnnotatedTryLock(this, 0, [&] { return real(this); });
}

bool Mutex::ReaderTryLock() {
  static auto real = Real<bool (*)(Mutex*)>("5Mutex13ReaderTryLockEv");
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  return AnnotatedTryLock(this, __tsan_mutex_read_lock, [&] { return real(this); });
}

void Mutex::Unlock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex6UnlockEv");
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  AnnotatedUnlock(this, 0, [&] { real(this); });
}

void Mutex::ReaderUnlock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex12ReaderUnlockEv");
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  AnnotatedUnlock(this, __tsan_mutex_read_lock, [&] { real(this); });
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>("5Mutex8LockWhenERKNS0_9ConditionE");
  if (shim_depth > 0) return real(this, cond);
  ShimScope scope;
  AnnotatedLock(this, 0, [&] { return (real(this, cond), 0); });
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real =
      Real<void (*)(Mutex*, const Condition&)>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  if (shim_depth > 0) return real(this, cond);
  ShimScope scope;
  AnnotatedLock(this, __tsan_mutex_read_lock, [&] { return (real(this, cond), 0); });
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  if (shim_depth > 0) return real(this, cond, timeout);
  ShimScope scope;
  return AnnotatedLock(this, 0, [&] { return real(this, cond, timeout); });
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  if (shim_depth > 0) return real(this, cond, timeout);
  ShimScope scope;
  return AnnotatedLock(this, __tsan_mutex_read_lock, [&] { return real(this, cond, timeout); });
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  if (shim_depth > 0) return real(this, cond, deadline);
  ShimScope scope;
  return AnnotatedLock(this, 0, [&] { return real(this, cond, deadline); });
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  if (shim_depth > 0) return real(this, cond, deadline);
  ShimScope scope;
  return AnnotatedLock(this, __tsan_mutex_read_lock, [&] { return real(this, cond, deadline); });
}

void Mutex::Await(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>("5Mutex5AwaitERKNS0_9ConditionE");
  if (shim_depth > 0) return real(this, cond);
  ShimScope scope;
  AnnotatedWait(this, [&] { return (real(this, cond), 0); });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  if (shim_depth > 0) return real(this, cond, timeout);
  ShimScope scope;
  return AnnotatedWait(this, [&] { return real(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  if (shim_depth > 0) return real(this, cond, deadline);
  ShimScope scope;
  return AnnotatedWait(this, [&] { return real(this, cond, deadline); });
}

void CondVar::Wait(Mutex* mu) {
  static auto real = Real<void (*)(CondVar*, Mutex*)>("7CondVar4WaitEPNS0_5MutexE");
  if (shim_depth > 0) return real(this, mu);
  ShimScope scope;
  AnnotatedWait(mu, [&] { return (real(this, mu), 0); });
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, Duration)>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  if (shim_depth > 0) return real(this, mu, timeout);
  ShimScope scope;
  return AnnotatedWait(mu, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static auto real =
      Real<bool (*)(CondVar*, Mutex*, Time)>("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  if (shim_depth > 0) return real(this, mu, deadline);
  ShimScope scope;
  return AnnotatedWait(mu, [&] { return real(this, mu, deadline); });
}

void Notification::Notify() {
  static auto real = Real<void (*)(Notification*)>("12Notification6NotifyEv");
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  __tsan_release(this);
  __tsan_release(NotifiedFlag(this));
  real(this);
}

void Notification::WaitForNotification() const {
  static auto real =
      Real<void (*)(const Notification*)>("12Notification19WaitForNotificationEv", true);
  if (shim_depth > 0) return real(this);
  ShimScope scope;
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  static auto real = Real<bool (*)(const Notification*, Duration)>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  if (shim_depth > 0) return real(this, timeout);
  ShimScope scope;
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  static auto real = Real<bool (*)(const Notification*, Time)>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  if (shim_depth > 0) return real(this, deadline);
  ShimScope scope;
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
