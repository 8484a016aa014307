// The sizes issue 12 asks the report to show: sizeof of the library's
// objects, added to the run's JSON context as "kcont_sizeof <type>" (report.py
// prints them with each field's justification; benchmarks/README.md has the
// table). tests/layout_test.cpp pins the same figures on LP64.
#pragma once

#include <benchmark/benchmark.h>

#include <kcont/dispatcher.hpp>
#include <kcont/kc.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/knote.hpp>
#include <kcont/knote_closure.hpp>
#include <kcont/thread_dispatcher.hpp>

#include <cstddef>
#include <string>

namespace kcont_bench {

struct sized_request;
// The shapes measured: a stateless lambda with no environment.
inline constexpr auto sized_fn = [](sized_request*, kcont::no_env&, int) {};
inline constexpr auto sized_knote_fn = [](kcont::knote_base<long>*, kcont::no_env&,
                                          kcont::knote_cause) {};

inline void add_sizes_context() {
  using kcont::bsd_level;
  const auto add = [](const char* name, std::size_t n) {
    benchmark::AddCustomContext(std::string("kcont_sizeof ") + name, std::to_string(n));
  };
  add("kc", sizeof(kcont::kc<decltype(sized_fn), kcont::no_env, bsd_level>));
  add("kc_base<T*, int>", sizeof(kcont::kc_base<sized_request*, int>));
  add("knote<user_filter>", sizeof(kcont::knote<kcont::user_filter>));
  add("knote_closure", sizeof(kcont::knote_closure<kcont::user_filter,
                                                   decltype(sized_knote_fn),
                                                   kcont::no_env, bsd_level>));
  add("manual_dispatcher<>", sizeof(kcont::manual_dispatcher<>));
  add("thread_dispatcher<>", sizeof(kcont::thread_dispatcher<>));
}

}  // namespace kcont_bench
