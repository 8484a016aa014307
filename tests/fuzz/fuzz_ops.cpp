// libFuzzer target: the random-operation driver of the test suite, fed by the
// fuzzer. Built with clang -fsanitize=fuzzer,address,undefined; run in CI for
// a bounded time from the seed corpus in tests/fuzz/corpus.
#include <cstdio>
#include <cstdlib>

#include "../random_ops.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string verdict = kcont_test::run_ops(data, size);
  if (!verdict.empty()) {
    std::fprintf(stderr, "kcont model mismatch: %s\n", verdict.c_str());
    std::abort();
  }
  return 0;
}
