// libFuzzer target: the random-operation drivers of the test suite, fed by
// the fuzzer. The first byte picks the driver: the foundation (continuations,
// queues, levels, run/defer/run_all, the manual dispatcher; random_ops.hpp)
// or the kqueue (batches of changes and scans, compared call by call with
// the independent FreeBSD reference model; kqueue_differential.hpp). Each
// checks every step against its reference model.
// Built with clang -fsanitize=fuzzer,address,undefined; run in CI for a
// bounded time from the seed corpus in tests/fuzz/corpus.
#include <cstdio>
#include <cstdlib>

#include "../kqueue_differential.hpp"
#include "../random_ops.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string verdict;
  if (data[0] & 1) {
    std::size_t i = 1, events = 0;
    auto pick = [&](std::uint32_t n) -> std::uint32_t {
      return i < size ? data[i++] % n : 0;
    };
    verdict = kq_diff::run_kqueue_ops(pick, static_cast<int>((size - 1) / 8), events);
  } else {
    verdict = kcont_test::run_ops(data + 1, size - 1);
  }
  if (!verdict.empty()) {
    std::fprintf(stderr, "kcont model mismatch: %s\n", verdict.c_str());
    std::abort();
  }
  return 0;
}
