// kcont/make_kc.hpp — continuations the library allocates and frees.
//
// Defines `make_kc` / `allocate_kc` (NetBSD's `kcont_malloc` + KC_AUTOFREE:
// the library frees the continuation right after its function is called,
// or when dispose() hands it back unrun), their no-throw forms
// `try_make_kc` / `try_allocate_kc`, and `nothrow_allocator`. What they
// return is the continuation's kc_base, to queue, run or defer like any
// other. kcont/kc.hpp includes this header.
//
// Usage:
//   auto& k = kcont::make_kc([](request* r, kcont::no_env&, int) { ... },
//                            kcont::no_env{}, bsd_level::softnet);
//   kcont::defer(d, k, &req, 0);   // freed once it has run
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "kcont/detail/fn_signature.hpp"
#include "kcont/kc_base.hpp"
#include "kcont/kc_hook.hpp"
#include "kcont/level.hpp"

namespace kcont {

namespace detail {

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
  static constexpr bool autofree = true;

  allocated_kc(const node_allocator& alloc, Fn fn, Env env, LevelSpec level)
      : base_type(&kc_trampoline<allocated_kc>::op,
                  &kc_trampoline<allocated_kc>::invoke,
                  static_cast<level_type>(level), hook_access::autofree_bit),
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
  friend struct kc_trampoline<allocated_kc>;
  void call(Obj o, Status s) { fn_(o, env_, s); }

  [[no_unique_address]] node_allocator alloc_;
  [[no_unique_address]] Fn fn_;
  [[no_unique_address]] Env env_;
};

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
    -> kc_base<typename detail::fn_signature<Fn>::obj,
               typename detail::fn_signature<Fn>::status,
               level_set_of_t<LevelSpec>>& {
  using Obj = typename detail::fn_signature<Fn>::obj;
  using Status = typename detail::fn_signature<Fn>::status;
  static_assert(!std::is_same_v<Obj, detail::undeduced>,
                "kcont::allocate_kc: cannot deduce the obj and status types: "
                "Fn must be callable as fn(Obj, Env&, Status) with a "
                "non-template call operator");
  static_assert(continuation_function<Fn, Obj, Env, Status>,
                "kcont::allocate_kc: Fn is not callable as fn(obj, env, status)"
                " with this environment");
  using node = detail::allocated_kc<Fn, Env, LevelSpec, Alloc, Obj, Status>;
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
    -> kc_base<typename detail::fn_signature<Fn>::obj,
               typename detail::fn_signature<Fn>::status,
               level_set_of_t<LevelSpec>>* {
  using Obj = typename detail::fn_signature<Fn>::obj;
  using Status = typename detail::fn_signature<Fn>::status;
  static_assert(!std::is_same_v<Obj, detail::undeduced>,
                "kcont::try_allocate_kc: cannot deduce the obj and status "
                "types: Fn must be callable as fn(Obj, Env&, Status) with a "
                "non-template call operator");
  static_assert(continuation_function<Fn, Obj, Env, Status>,
                "kcont::try_allocate_kc: Fn is not callable as fn(obj, env, "
                "status) with this environment");
  using node = detail::allocated_kc<Fn, Env, LevelSpec, Alloc, Obj, Status>;
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
