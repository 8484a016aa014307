// kcont/kc_base.hpp — the continuation with a known signature.
//
// Defines `kc_base<Obj, Status, Level>`: a kc_hook (kcont/kc_hook.hpp) with
// the typed obj/status a deferral saves and a typed trampoline. An object's
// callback list (kcqueue<kc_base<...>>) holds it, `run` calls through it; a
// caller-owned `kc` (kcont/kc.hpp) and a library-allocated one
// (kcont/make_kc.hpp) both derive from it and share one trampoline pair
// (detail::kc_trampoline). Also the `continuation_function` concept.
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kcont/cancel_status.hpp"
#include "kcont/contract.hpp"
#include "kcont/kc_hook.hpp"
#include "kcont/level.hpp"

namespace kcont {

namespace detail {

// What may be saved inside a continuation by a deferral.
template <class T>
concept saveable = std::copyable<T> && std::default_initializable<T> &&
                   std::is_trivially_destructible_v<T> && !std::is_reference_v<T>;

template <class Obj, class Status, level_set Level>
struct kc_base_access;

}  // namespace detail

// A function that kc can call: fn(obj, env, status) with an lvalue env.
template <class Fn, class Obj, class Env, class Status>
concept continuation_function = std::invocable<Fn&, Obj, Env&, Status>;

// The type-erased continuation with a known signature.
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

  // For trampolines: the saved obj/status, ending the claimed and deferred
  // states in one step (the take_saved row of the state table in
  // kcont/kc_hook.hpp), so a caller-owned continuation reused after it ran
  // never replays stale values (the NetBSD patch never cleared
  // KC_DEFERRED). Every resuming trampoline must call it. The values are
  // read before the bits are cleared: once clear, a deferral may save new
  // ones.
  std::pair<Obj, Status> take_saved(detail::kc_op how) noexcept {
    std::pair<Obj, Status> saved{obj_, status_};
    constexpr auto bits = static_cast<std::uint8_t>(deferred_bit | queued_bit);
    if (how == detail::kc_op::resume_shared)
      detail::hook_access::end_claim(*this, bits);
    else
      detail::hook_access::clear<false>(*this, bits);
    return saved;
  }
  // The same for a trampoline, which knows at compile time the state the
  // take leaves (`rest`: the autofree bit or nothing; set at construction,
  // never changed): one store of it, no read of the state word.
  std::pair<Obj, Status> take_saved_leaving(std::uint8_t rest) noexcept {
    std::pair<Obj, Status> saved{obj_, status_};
    KCONT_EXPECTS((detail::hook_access::state(*this).load(std::memory_order_relaxed) &
                   autofree_bit) == rest,
                  "kc: a trampoline's autofree flag disagrees with its state");
    detail::hook_access::state(*this).store(rest, std::memory_order_release);
    return saved;
  }

 private:
  friend struct detail::hook_access;
  template <class, class, level_set>
  friend struct detail::kc_base_access;

  // The saved status first: a 4-byte Status (an int, an enum) then sits in
  // kc_hook's tail padding (after its state and level bytes), not in a
  // padded slot of its own after obj_.
  Status status_{};
  // The typed call of the continuation's function (its trampoline's half
  // that knows Obj and Status): every kc_base needs it.
  invoke_fn invoke_;
  // The obj saved by a deferral (rule 2): every kc_base may be deferred.
  Obj obj_{};
};

namespace detail {

// kcont's own door to kc_base (run.hpp, resume.hpp, the trampolines): the
// typed call and the saved values.
template <class Obj, class Status, level_set Level>
struct kc_base_access {
  using base = kc_base<Obj, Status, Level>;
  static void invoke(base& k, Obj o, Status s) { k.invoke_(k, o, s); }
  static Obj& saved_obj(base& k) noexcept { return k.obj_; }
  static Status& saved_status(base& k) noexcept { return k.status_; }
  static std::pair<Obj, Status> take_saved(base& k, detail::kc_op how) noexcept {
    return k.take_saved(how);
  }
  static std::pair<Obj, Status> take_saved_leaving(base& k, std::uint8_t rest) noexcept {
    return k.take_saved_leaving(rest);
  }
};

// The one trampoline pair of every concrete continuation (kc, and the
// allocated one of make_kc): `invoke`, the typed call run() makes with fresh
// values, and `op`, the type-erased one queues make (detail::kc_op). Node supplies
// base_type, call(obj, status), and, when `Node::autofree`, free(Node*):
// the library then frees it right after the call, even when it throws, and
// on discard.
template <class Node>
struct kc_trampoline {
  using base = typename Node::base_type;
  using obj = typename base::obj_type;
  using status = typename base::status_type;
  using access = kc_base_access<obj, status, typename base::level_type>;

  static void invoke(base& b, obj o, status s) {
    Node* self = static_cast<Node*>(&b);
    if constexpr (Node::autofree) {
      free_on_exit guard{self};
      self->call(o, s);
    } else {
      self->call(o, s);
      // *self may be gone: the function may have destroyed it.
    }
  }

  static void op(kc_hook* h, detail::kc_op what) {
    Node* self = static_cast<Node*>(static_cast<base*>(h));
    if constexpr (Node::autofree) {
      free_on_exit guard{self};
      resume(*self, what);
    } else {
      resume(*self, what);
    }
  }

 private:
  struct free_on_exit {
    Node* self;
    ~free_on_exit() { Node::free(self); }
  };

  // The state a take leaves: the take_saved row of the state table in
  // kcont/kc_hook.hpp clears queued and deferred; autofree is the type's.
  static constexpr std::uint8_t rest = Node::autofree ? hook_access::autofree_bit : 0;

  // detail::kc_op's values put discard and resume_cancelled last: the two resumes a
  // queue makes pass one test, as before either existed (both end the
  // claim with the same one store).
  static void resume(Node& self, detail::kc_op what) {
    if (what >= detail::kc_op::discard) [[unlikely]] {
      if (what == detail::kc_op::resume_cancelled) resume_cancelled(self);
      return;
    }
    auto [o, s] = access::take_saved_leaving(self, rest);
    self.call(o, s);
  }

  static void resume_cancelled(Node& self) {
    auto [o, s] = access::take_saved_leaving(self, rest);
    (void)s;
    if constexpr (detail::has_cancel_status<status>) {
      self.call(o, static_cast<status>(cancel_status<status>::value()));
    } else {
      // Release builds: handed back as dispose() would (not run; an
      // allocated one is freed by op's guard).
      KCONT_EXPECTS(false,
                    "resume(h, cancelled): its Status has no kcont::"
                    "cancel_status; specialise it, or resume it with "
                    "resume(k, status)");
      (void)o;
    }
  }
};

}  // namespace detail

}  // namespace kcont
