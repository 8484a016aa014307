// kcont/kc.hpp — the continuation itself.
//
// Defines `kc<Fn, Env, Level>`: a function, its environment and the level it
// must run at, stored inline in an object the caller owns (the BSD `struct kc`).
// The function is called as fn(obj, env, status) with typed arguments: `obj` is
// the object that completed (a request, a knote), `status` its result. Every
// kc derives from `kc_base<Obj, Status, Level>`, which a queue or a dispatcher
// holds through one intrusive link; calling through it is one indirect call,
// with no virtual function and no allocation. `make_kc` / `allocate_kc` are the
// NetBSD's `kcont_malloc` + KC_AUTOFREE: the library frees those right after the
// call.
//
// Compared with std::function / std::move_only_function: no heap, no copy, no
// move; the object is immovable because queues link it in place, and it can be
// deferred (obj and status saved inside it) and queued without any storage but
// its own.
//
// Usage:
//   struct request { int id; };
//   int total = 0;
//   kcont::kc done{[](request* r, int* sum, int status) { *sum += r->id + status; },
//                  &total, kcont::bsd_level::softnet};
//   // run it now or defer it: see kcont/run.hpp
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "kcont/contract.hpp"
#include "kcont/level.hpp"

namespace kcont {

namespace detail {
struct hook_access;
}

// What a queue or dispatcher asks of a type-erased continuation.
enum class kc_op : std::uint8_t {
  resume,         // run with the saved obj/status; no other thread can touch it
  resume_shared,  // the same, while other threads may push it concurrently
  discard,        // handed back without running: free it if the library owns it
};

// The type-erased part every queue links: a `next` link, the state bits, the
// level and one trampoline. Not constructible on its own; derive through
// kc_base (or kc). Queues touch it only through detail::hook_access.
//
// Lifetime contract: the owner (the caller, or the library for an allocated
// continuation) keeps it alive while it is queued or deferred. Destroying it
// while queued is a contract violation caught in debug builds.
//
// Dispatchers pop a continuation "claimed": its queued bit stays set until
// its trampoline, about to call the function, reads the saved obj/status
// (kc_base::take_saved), which ends the queued and deferred states in one
// atomic step. A deferral racing with the pop is thus absorbed by the run
// that has not started yet. A custom trampoline must call take_saved on
// every resume.
//
// A deferral made while the function runs (after take_saved) is a new claim
// and queues the continuation again. A thread_dispatcher never runs one
// continuation on two threads at once: each runner thread publishes what it
// runs in its slot (under the queue's lock, at the pop), and a pool thread
// that pops a re-deferral of a continuation a sibling is still running
// hands it over to that sibling (tags its slot) instead of running it. The
// continuation stays claimed, on no queue, until the sibling, whose run has
// returned, runs it again. Touching it then does not break rule 3: its
// owner keeps a claimed (queued) continuation alive. A hand-over counts as
// popped: cancel no longer finds it, cancel_sync waits for that run too
// (or, called from inside the run, withdraws it).
class kc_hook {
 public:
  kc_hook(const kc_hook&) = delete;
  kc_hook& operator=(const kc_hook&) = delete;

  // True while the continuation sits on a queue (a kcqueue or a level queue).
  // Thread-safety: a snapshot; another thread may change it at once.
  [[nodiscard]] bool is_queued() const noexcept {
    return (state_.load(std::memory_order_acquire) & queued_bit) != 0;
  }
  // True while obj/status are saved by a deferral that has not run yet.
  [[nodiscard]] bool is_deferred() const noexcept {
    return (state_.load(std::memory_order_acquire) & deferred_bit) != 0;
  }
  // True when the library allocated it and frees it right after its call.
  [[nodiscard]] bool is_autofree() const noexcept {
    return (state_.load(std::memory_order_relaxed) & autofree_bit) != 0;
  }

 protected:
  using op_fn = void (*)(kc_hook*, kc_op);

  static constexpr std::uint8_t queued_bit = 1;
  static constexpr std::uint8_t deferred_bit = 2;
  static constexpr std::uint8_t autofree_bit = 4;

  constexpr kc_hook(op_fn op, std::uint8_t level, std::uint8_t state) noexcept
      : op_(op), state_(state), level_(level) {}

  ~kc_hook() {
    KCONT_EXPECTS((state_.load(std::memory_order_relaxed) & queued_bit) == 0,
                  "kc: a continuation was destroyed while queued "
                  "(its owner must keep it alive until it runs or is cancelled)");
  }

 private:
  friend struct detail::hook_access;

  kc_hook* next_ = nullptr;
  op_fn op_;
  std::atomic<std::uint8_t> state_;
  std::uint8_t level_;
};

namespace detail {

// The one door to kc_hook's private state, for kcont's own queues and
// dispatchers (Asio's op_queue_access idea). Not for users.
struct hook_access {
  static kc_hook*& next(kc_hook& h) noexcept { return h.next_; }
  static kc_hook* next(const kc_hook& h) noexcept { return h.next_; }
  static std::atomic<std::uint8_t>& state(kc_hook& h) noexcept {
    return h.state_;
  }
  static std::uint8_t level(const kc_hook& h) noexcept { return h.level_; }
  static void op(kc_hook& h, kc_op o) { h.op_(&h, o); }

  static constexpr std::uint8_t queued_bit = kc_hook::queued_bit;
  static constexpr std::uint8_t deferred_bit = kc_hook::deferred_bit;
  static constexpr std::uint8_t autofree_bit = kc_hook::autofree_bit;
  // Either set: run() leaves its one-test fast path.
  static constexpr std::uint8_t busy_bits = queued_bit | deferred_bit;

  // Unlinks n from the singly linked list [head, tail] if it is there,
  // fixing head and tail; n's own link is reset, its state left alone (the
  // caller clears the queued bit with the atomicity its queue needs).
  // Returns: true when n was on the list. Complexity: O(position of n).
  static bool unlink_slow(kc_hook*& head, kc_hook*& tail, kc_hook& n) noexcept {
    kc_hook* prev = nullptr;
    for (kc_hook* p = head; p != nullptr; prev = p, p = p->next_) {
      if (p != &n) continue;
      if (prev == nullptr)
        head = p->next_;
      else
        prev->next_ = p->next_;
      if (tail == p) tail = prev;
      p->next_ = nullptr;
      return true;
    }
    return false;
  }

  // Clears bits. `Concurrent` selects an atomic read-modify-write; without it
  // the caller guarantees no other thread touches the state word.
  template <bool Concurrent = true>
  static void clear(kc_hook& h, std::uint8_t bits) noexcept {
    if constexpr (Concurrent) {
      h.state_.fetch_and(static_cast<std::uint8_t>(~bits),
                         std::memory_order_acq_rel);
    } else {
      h.state_.store(h.state_.load(std::memory_order_relaxed) &
                         static_cast<std::uint8_t>(~bits),
                     std::memory_order_relaxed);
    }
  }
  // Clears bits of a continuation this thread holds claimed (queued bit set
  // by its deferral, popped by this consumer). No read-modify-write is
  // needed even with producers racing: while the queued bit is set, the only
  // other writes are failed claims (fetch_or of a bit already set), which
  // store the value they read; so a plain store of the new value loses
  // nothing, and a claim ordered after it sees the bits clear. Release:
  // the caller's reads of the saved obj/status happen before a new claimer
  // may overwrite them. Saves a locked instruction per continuation run by
  // a runner thread.
  static void end_claim(kc_hook& h, std::uint8_t bits) noexcept {
    h.state_.store(h.state_.load(std::memory_order_relaxed) &
                       static_cast<std::uint8_t>(~bits),
                   std::memory_order_release);
  }
  // Drops a deferral's saved obj/status (clears the deferred bit) unless
  // the continuation is queued: a claim racing with it either comes first
  // (the bit stays, the claimer's run uses it) or sees the bit clear and
  // saves its own values. For a continuation handed back by a cancel whose
  // saved values must never run (a detached knote: rule 8).
  static void drop_saved_unless_queued(kc_hook& h) noexcept {
    std::uint8_t st = h.state_.load(std::memory_order_acquire);
    while ((st & (queued_bit | deferred_bit)) == deferred_bit &&
           !h.state_.compare_exchange_weak(
               st, static_cast<std::uint8_t>(st & ~deferred_bit),
               std::memory_order_acq_rel, std::memory_order_acquire)) {
    }
  }
  template <bool Concurrent = true>
  static std::uint8_t set(kc_hook& h, std::uint8_t bits) noexcept {
    if constexpr (Concurrent) {
      return h.state_.fetch_or(bits, std::memory_order_acq_rel);
    } else {
      const std::uint8_t old = h.state_.load(std::memory_order_relaxed);
      h.state_.store(old | bits, std::memory_order_relaxed);
      return old;
    }
  }
};

// What may be saved inside a continuation by a deferral.
template <class T>
concept saveable = std::copyable<T> && std::default_initializable<T> &&
                   std::is_trivially_destructible_v<T> && !std::is_reference_v<T>;

}  // namespace detail

// Effects: hands back a continuation that will not run (cancelled or returned
//   at shutdown): frees it if the library allocated it, else does nothing.
// Precondition: not queued.
inline void dispose(kc_hook& h) {
  KCONT_EXPECTS(!h.is_queued(), "dispose: the continuation is still queued");
  detail::hook_access::op(h, kc_op::discard);
}

template <class Obj, class Status, level_set Level>
struct kc_base_access;

// The type-erased continuation with a known signature: what an object's
// callback list (kcqueue<kc_base<...>>) holds and what `run` calls through.
//
//   Obj    — the object passed to the function (a pointer or a small handle);
//   Status — the result passed with it (int, an enum, std::error_code...);
//   Level  — the level set (see kcont/level.hpp).
//
// Obj and Status must be copyable, default-constructible and trivially
// destructible: a deferral saves them inside the continuation.
template <class Obj, class Status = int, level_set Level = bsd_level>
class kc_base : public kc_hook {
  static_assert(detail::saveable<Obj>,
                "kcont::kc_base: Obj must be a copyable, default-constructible, "
                "trivially destructible value (a pointer or a handle): a "
                "deferral saves it inside the continuation");
  static_assert(detail::saveable<Status>,
                "kcont::kc_base: Status must be a copyable, default-"
                "constructible, trivially destructible value (an int, an enum, "
                "std::error_code): a deferral saves it inside the continuation");

 public:
  using obj_type = Obj;
  using status_type = Status;
  using level_type = Level;

  // The level this continuation must run at.
  [[nodiscard]] Level level() const noexcept {
    return static_cast<Level>(detail::hook_access::level(*this));
  }

 protected:
  using invoke_fn = void (*)(kc_base&, Obj, Status);

  constexpr kc_base(op_fn op, invoke_fn invoke, Level level,
                    std::uint8_t state) noexcept
      : kc_hook(op, static_cast<std::uint8_t>(level), state), invoke_(invoke) {}
  ~kc_base() = default;

  // For derived trampolines: the saved obj/status, clearing the deferred
  // state first, so a caller-owned continuation reused after it ran never
  // replays stale values (the NetBSD patch never cleared KC_DEFERRED).
  // It also ends the queued state, in the same atomic step: a dispatcher
  // that pops a continuation "claimed" (kcqueue::pop_claimed, mpsc_queue)
  // leaves the queued bit set until here, so a deferral racing with the pop
  // is absorbed by the pending run (it has not read its values yet) instead
  // of slipping in between the pop and this read, where it would neither
  // save its values nor be refused. Every resuming trampoline must call it.
  // The values are read before the bits are cleared: once they are clear a
  // concurrent deferral may save new ones.
  std::pair<Obj, Status> take_saved(kc_op how) noexcept {
    std::pair<Obj, Status> saved{obj_, status_};
    constexpr auto bits = static_cast<std::uint8_t>(deferred_bit | queued_bit);
    if (how == kc_op::resume_shared)
      detail::hook_access::end_claim(*this, bits);
    else
      detail::hook_access::clear<false>(*this, bits);
    return saved;
  }

 private:
  friend struct detail::hook_access;
  template <class, class, level_set>
  friend struct kc_base_access;

  invoke_fn invoke_;
  Obj obj_{};
  Status status_{};
};

// kcont's own door to kc_base (run.hpp): the trampoline and the saved values.
template <class Obj, class Status, level_set Level>
struct kc_base_access {
  using base = kc_base<Obj, Status, Level>;
  static void invoke(base& k, Obj o, Status s) { k.invoke_(k, o, s); }
  static Obj& saved_obj(base& k) noexcept { return k.obj_; }
  static Status& saved_status(base& k) noexcept { return k.status_; }
};

namespace detail {

// Deduces Obj and Status from a callable whose call operator is not a
// template: fn(Obj, Env, Status).
struct undeduced {};

template <class Sig>
struct three_args {
  using obj = undeduced;
  using status = undeduced;
};
template <class R, class A, class E, class S>
struct three_args<R(A, E, S)> {
  using obj = std::remove_cvref_t<A>;
  using status = std::remove_cvref_t<S>;
};

template <class M>
struct member_call {
  using type = void;
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...)> {
  using type = R(A...);
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...) const> {
  using type = R(A...);
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...) noexcept> {
  using type = R(A...);
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...) const noexcept> {
  using type = R(A...);
};

// The number of parameters of Fn's call: -1 when it cannot be told (a
// template call operator, a generic lambda).
template <class Sig>
inline constexpr int arity_of = -1;
template <class R, class... A>
inline constexpr int arity_of<R(A...)> = static_cast<int>(sizeof...(A));
template <class Fn>
inline constexpr int fn_arity = -1;
template <class Fn>
  requires requires { &Fn::operator(); }
inline constexpr int fn_arity<Fn> =
    arity_of<typename member_call<decltype(&Fn::operator())>::type>;
template <class R, class... A>
inline constexpr int fn_arity<R (*)(A...)> = static_cast<int>(sizeof...(A));
template <class R, class... A>
inline constexpr int fn_arity<R (*)(A...) noexcept> = static_cast<int>(sizeof...(A));

template <class Fn>
struct fn_signature : three_args<void> {};
template <class Fn>
  requires requires { &Fn::operator(); }
struct fn_signature<Fn>
    : three_args<typename member_call<decltype(&Fn::operator())>::type> {};
template <class R, class A, class E, class S>
struct fn_signature<R (*)(A, E, S)> : three_args<R(A, E, S)> {};
template <class R, class A, class E, class S>
struct fn_signature<R (*)(A, E, S) noexcept> : three_args<R(A, E, S)> {};

}  // namespace detail

// The obj and status types deduced from Fn (undeduced for a generic lambda).
template <class Fn>
using deduced_obj_t = typename detail::fn_signature<Fn>::obj;
template <class Fn>
using deduced_status_t = typename detail::fn_signature<Fn>::status;

// A function that kc can call: fn(obj, env, status) with an lvalue env.
template <class Fn, class Obj, class Env, class Status>
concept continuation_function = std::invocable<Fn&, Obj, Env&, Status>;

// No environment: an empty struct that costs no bytes.
struct no_env {};

// Binds a member function `void C::f(Obj, Status)` as a continuation
// function, with the object pointer as the environment:
//   kc k{kcont::method<&conn::on_read>, this, bsd_level::softnet};
// Prefer it to a lambda for fixed member handlers: it names the handler in
// the type and stores nothing but the pointer.
// Specialised on the member pointer's type, not its value: a value pattern
// R (C::*)(A, S) also matches a noexcept function (noexcept converts away),
// which made method<&C::f> ambiguous for a noexcept f.
template <auto M, class = decltype(M)>
struct method_fn;
template <auto M, class R, class C, class A, class S>
struct method_fn<M, R (C::*)(A, S)> {
  void operator()(A a, C* self, S s) const { (self->*M)(a, s); }
};
template <auto M, class R, class C, class A, class S>
struct method_fn<M, R (C::*)(A, S) noexcept> {
  void operator()(A a, C* self, S s) const noexcept { (self->*M)(a, s); }
};
// A handler that needs neither obj nor status: `void C::f()`. Obj and Status
// are then the user's to name (kc<method_fn<&C::f>, C*, Level, Obj,
// Status>); a knote_method knows them.
template <auto M, class R, class C>
struct method_fn<M, R (C::*)()> {
  template <class A, class S>
  void operator()(A&&, C* self, S&&) const { (self->*M)(); }
};
template <auto M, class R, class C>
struct method_fn<M, R (C::*)() noexcept> {
  template <class A, class S>
  void operator()(A&&, C* self, S&&) const noexcept { (self->*M)(); }
};
template <auto M>
inline constexpr method_fn<M> method{};

template <class Fn, class Env, level_spec LevelSpec, class Obj, class Status>
struct kc_access;

// A caller-owned continuation: Fn and Env stored inline, the level either a
// runtime value of a level set or a compile-time `static_level`.
//
// Lifetime contract: the caller owns it. It must stay alive while queued or
// deferred; once its function has been called kcont never touches it again,
// so the function may destroy it (or the object it is a member of). It is
// neither copyable nor movable: queues link it in place.
//
// Obj and Status are deduced from Fn's call operator; name them for a
// generic lambda: kc<decltype(fn), Env, bsd_level, request*, int>.
template <class Fn, class Env, level_spec LevelSpec,
          class Obj = deduced_obj_t<Fn>, class Status = deduced_status_t<Fn>>
class kc final
    : public kc_base<Obj, Status, level_set_of_t<LevelSpec>> {
  // One message per mistake, the first error a person reads: each assert
  // holds when an earlier one already failed.
  static constexpr int fn_arity = detail::fn_arity<Fn>;
  static_assert(fn_arity == -1 || fn_arity == 3,
                "kcont::kc: Fn does not take three parameters: a continuation "
                "function is fn(obj, env, status), the environment second "
                "(is the env parameter missing? [](request* r, Env& env, int "
                "status) {...})");
  static_assert(fn_arity != -1 || !std::is_same_v<Obj, detail::undeduced>,
                "kcont::kc: cannot deduce the obj and status types: Fn must be "
                "callable as fn(Obj, Env&, Status) with a non-template call "
                "operator; for a generic lambda name them, as in "
                "kc<decltype(fn), Env, Level, Obj, Status>");
  static_assert(std::is_same_v<Obj, detail::undeduced> ||
                    continuation_function<Fn, Obj, Env, Status>,
                "kcont::kc: Fn is not callable as fn(obj, env, status) with "
                "this environment: its second parameter must accept an Env& "
                "(take the environment by reference, pointer or value)");

 public:
  using base_type = kc_base<Obj, Status, level_set_of_t<LevelSpec>>;
  using level_type = level_set_of_t<LevelSpec>;
  // True when the level is fixed in the type (`kcont::at<...>`).
  static constexpr bool has_static_level = is_static_level_v<LevelSpec>;

  // Effects: stores fn and env; the continuation is idle (neither queued nor
  //   deferred). Throws: whatever moving Fn or Env throws.
  constexpr kc(Fn fn, Env env, LevelSpec level)
      : base_type(&op, &invoke, static_cast<level_type>(level), 0),
        fn_(std::move(fn)),
        env_(std::move(env)) {}

  // A level other than the one fixed in the type (static_level<L>): rejected
  // with the reason, rather than with "no matching constructor".
  template <level_spec Other>
    requires(is_static_level_v<LevelSpec> && !std::same_as<Other, LevelSpec>)
  constexpr kc(Fn fn, Env env, Other)
      : kc(std::move(fn), std::move(env), LevelSpec{}) {
    static_assert(std::same_as<Other, LevelSpec>,
                  "kcont::kc: the level argument differs from the level in the "
                  "type: kc<Fn, Env, static_level<L>> takes kcont::at<L>, the "
                  "same L (or let the constructor deduce the type: kc k{fn, "
                  "env, kcont::at<L>})");
  }

  kc(const kc&) = delete;
  kc& operator=(const kc&) = delete;

  // The environment passed to every call.
  [[nodiscard]] Env& env() noexcept { return env_; }
  [[nodiscard]] const Env& env() const noexcept { return env_; }

 private:
  template <class, class, level_spec, class, class>
  friend struct kc_access;

  static void invoke(base_type& b, Obj o, Status s) {
    kc& self = static_cast<kc&>(b);
    self.fn_(o, self.env_, s);
    // *self may be gone: the function may have destroyed it.
  }
  static void op(kc_hook* h, kc_op what) {
    kc& self = static_cast<kc&>(*static_cast<base_type*>(h));
    if (what != kc_op::discard) {
      auto [o, s] = self.take_saved(what);
      self.fn_(o, self.env_, s);
    }
  }

  [[no_unique_address]] Fn fn_;
  [[no_unique_address]] Env env_;
};

template <class Fn, class Env, level_spec LevelSpec>
kc(Fn, Env, LevelSpec) -> kc<Fn, Env, LevelSpec>;

// kcont's own door to a concrete kc (run.hpp calls the function directly when
// the type is known, with no trampoline).
template <class Fn, class Env, level_spec LevelSpec, class Obj, class Status>
struct kc_access {
  using type = kc<Fn, Env, LevelSpec, Obj, Status>;
  static void call(type& k, Obj o, Status s) { k.fn_(o, k.env_, s); }
};

// A continuation the library allocates (make_kc / allocate_kc): freed right
// after its function returns (or throws), or by dispose() when handed back
// unrun. Reached only through its kc_base.
template <class Fn, class Env, level_spec LevelSpec, class Alloc, class Obj,
          class Status>
class allocated_kc final
    : public kc_base<Obj, Status, level_set_of_t<LevelSpec>> {
 public:
  using base_type = kc_base<Obj, Status, level_set_of_t<LevelSpec>>;
  using level_type = level_set_of_t<LevelSpec>;
  // Not named allocator_type: that would make std::uses_allocator true and
  // pmr allocators would try to pass themselves to the constructor again.
  using node_allocator = typename std::allocator_traits<
      Alloc>::template rebind_alloc<allocated_kc>;

  allocated_kc(const node_allocator& alloc, Fn fn, Env env, LevelSpec level)
      : base_type(&op, &invoke, static_cast<level_type>(level),
                  detail::hook_access::autofree_bit),
        alloc_(alloc),
        fn_(std::move(fn)),
        env_(std::move(env)) {}

  // Effects: destroys and deallocates `self` through its own allocator.
  static void free(allocated_kc* self) noexcept {
    node_allocator a(self->alloc_);
    std::allocator_traits<node_allocator>::destroy(a, self);
    std::allocator_traits<node_allocator>::deallocate(a, self, 1);
  }

 private:
  struct free_on_exit {
    allocated_kc* self;
    ~free_on_exit() { free(self); }
  };
  static void invoke(base_type& b, Obj o, Status s) {
    auto* self = static_cast<allocated_kc*>(&b);
    free_on_exit guard{self};
    self->fn_(o, self->env_, s);
  }
  static void op(kc_hook* h, kc_op what) {
    auto* self = static_cast<allocated_kc*>(static_cast<base_type*>(h));
    free_on_exit guard{self};
    if (what != kc_op::discard) {
      auto [o, s] = self->take_saved(what);
      self->fn_(o, self->env_, s);
    }
  }

  [[no_unique_address]] node_allocator alloc_;
  [[no_unique_address]] Fn fn_;
  [[no_unique_address]] Env env_;
};

namespace detail {
// Builds an allocated continuation in the storage `p` that `a` gave. Should
// moving Fn or Env throw, the guard gives the storage back before the
// exception leaves: nothing half-built is left behind. A guard rather than
// try/catch, so the same code serves builds without exceptions.
template <class Node, class NodeAlloc, class Fn, class Env, class LevelSpec>
Node* construct_allocated(NodeAlloc& a, Node* p, Fn&& fn, Env&& env,
                          LevelSpec level) {
  using traits = std::allocator_traits<NodeAlloc>;
  struct give_back {
    NodeAlloc& to;
    Node* storage;
    ~give_back() {
      if (storage != nullptr) traits::deallocate(to, storage, 1);
    }
  } guard{a, p};
  traits::construct(a, p, a, std::forward<Fn>(fn), std::forward<Env>(env), level);
  guard.storage = nullptr;
  return p;
}
}  // namespace detail

// Effects: allocates a continuation with `alloc` (any allocator, including
//   std::pmr::polymorphic_allocator), to be freed by the library right after
//   its function is called (the NetBSD patch's kcont_malloc with KC_AUTOFREE).
// Returns: its kc_base, to queue, run or defer like any other.
// Throws: what the allocator throws (std::bad_alloc); nothing was created
//   then, so nothing is queued or lost.
template <class Alloc, class Fn, class Env, level_spec LevelSpec>
[[nodiscard]] auto allocate_kc(const Alloc& alloc, Fn fn, Env env,
                               LevelSpec level)
    -> kc_base<deduced_obj_t<Fn>, deduced_status_t<Fn>,
               level_set_of_t<LevelSpec>>& {
  using Obj = deduced_obj_t<Fn>;
  using Status = deduced_status_t<Fn>;
  static_assert(!std::is_same_v<Obj, detail::undeduced>,
                "kcont::allocate_kc: cannot deduce the obj and status types: "
                "Fn must be callable as fn(Obj, Env&, Status) with a "
                "non-template call operator");
  static_assert(continuation_function<Fn, Obj, Env, Status>,
                "kcont::allocate_kc: Fn is not callable as fn(obj, env, status)"
                " with this environment");
  using node = allocated_kc<Fn, Env, LevelSpec, Alloc, Obj, Status>;
  typename node::node_allocator a(alloc);
  node* p = std::allocator_traits<typename node::node_allocator>::allocate(a, 1);
  return *detail::construct_allocated(a, p, std::move(fn), std::move(env), level);
}

// allocate_kc with std::allocator.
template <class Fn, class Env, level_spec LevelSpec>
[[nodiscard]] auto make_kc(Fn fn, Env env, LevelSpec level) -> decltype(auto) {
  return allocate_kc(std::allocator<std::byte>{}, std::move(fn), std::move(env),
                     level);
}

// An allocator that reports failure by returning null instead of throwing
// (::operator new(std::nothrow)): what try_make_kc allocates with, and what
// code built without exceptions can give try_allocate_kc.
template <class T>
struct nothrow_allocator {
  using value_type = T;
  nothrow_allocator() = default;
  template <class U>
  constexpr nothrow_allocator(const nothrow_allocator<U>&) noexcept {}
  // Returns: storage for n objects, or nullptr when there is none.
  [[nodiscard]] T* allocate(std::size_t n) noexcept {
    if constexpr (alignof(T) > __STDCPP_DEFAULT_NEW_ALIGNMENT__)
      return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{alignof(T)},
                                            std::nothrow));
    else
      return static_cast<T*>(::operator new(n * sizeof(T), std::nothrow));
  }
  void deallocate(T* p, std::size_t) noexcept {
    if constexpr (alignof(T) > __STDCPP_DEFAULT_NEW_ALIGNMENT__)
      ::operator delete(p, std::align_val_t{alignof(T)});
    else
      ::operator delete(p);
  }
  template <class U>
  friend constexpr bool operator==(const nothrow_allocator&,
                                   const nothrow_allocator<U>&) noexcept {
    return true;
  }
};

// Effects: allocate_kc, but an allocation failure is returned, not thrown:
//   the form for code built without exceptions (-fno-exceptions).
// Returns: the continuation's kc_base, or nullptr when `alloc` returned null
//   (or, with exceptions, threw std::bad_alloc); nothing was created then,
//   so nothing is queued or lost.
// Throws: with exceptions, what constructing Fn or Env throws (the storage
//   is freed first).
template <class Alloc, class Fn, class Env, level_spec LevelSpec>
[[nodiscard]] auto try_allocate_kc(const Alloc& alloc, Fn fn, Env env,
                                   LevelSpec level)
    -> kc_base<deduced_obj_t<Fn>, deduced_status_t<Fn>,
               level_set_of_t<LevelSpec>>* {
  using Obj = deduced_obj_t<Fn>;
  using Status = deduced_status_t<Fn>;
  static_assert(!std::is_same_v<Obj, detail::undeduced>,
                "kcont::try_allocate_kc: cannot deduce the obj and status "
                "types: Fn must be callable as fn(Obj, Env&, Status) with a "
                "non-template call operator");
  static_assert(continuation_function<Fn, Obj, Env, Status>,
                "kcont::try_allocate_kc: Fn is not callable as fn(obj, env, "
                "status) with this environment");
  using node = allocated_kc<Fn, Env, LevelSpec, Alloc, Obj, Status>;
  using traits = std::allocator_traits<typename node::node_allocator>;
  typename node::node_allocator a(alloc);
  node* p = nullptr;
#if defined(__cpp_exceptions)
  try {
    p = traits::allocate(a, 1);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
#else
  p = traits::allocate(a, 1);
#endif
  if (p == nullptr) return nullptr;
  return detail::construct_allocated(a, p, std::move(fn), std::move(env), level);
}

// try_allocate_kc with nothrow_allocator (::operator new(std::nothrow)).
// Returns: the continuation's kc_base, or nullptr when memory ran out.
template <class Fn, class Env, level_spec LevelSpec>
[[nodiscard]] auto try_make_kc(Fn fn, Env env, LevelSpec level) {
  return try_allocate_kc(nothrow_allocator<std::byte>{}, std::move(fn),
                         std::move(env), level);
}

}  // namespace kcont
