// The header from C++17, and one checkpoint read by 8 threads at once.
#include "support.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char **argv) {
  test_init(argc, argv);
  mmckpt_checkpoint *ckpt = nullptr;
  // Under valgrind (MMCKPT_TEST_SKIP_LARGE) a small file keeps the run short.
  const bool small = getenv("MMCKPT_TEST_SKIP_LARGE") != nullptr;
  CHECK_OK(mmckpt_checkpoint_open(data_path(small ? "fixtures/nested.pt" : "fixtures/recipe.pt"), nullptr, &ckpt));
  if (!ckpt) return test_finish("test_cpp");
  const size_t count = mmckpt_checkpoint_tensor_count(ckpt);
  CHECK(count == (small ? 17u : 20u));
  std::vector<std::string> expected_hash(count);
  for (size_t i = 0; i < count; i++) {
    mmckpt_tensor t;
    CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, i, &t));
    char hex[65];
    sha256_hex(t.data, static_cast<size_t>(t.nbytes), hex);
    expected_hash[i] = hex;
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 8; k++) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 2; round++) {
        for (size_t j = 0; j < count; j++) {
          size_t i = (j + static_cast<size_t>(k)) % count;
          mmckpt_tensor t;
          if (mmckpt_checkpoint_tensor_at(ckpt, i, &t) != MMCKPT_OK) { mismatches++; continue; }
          mmckpt_tensor by_name;
          if (mmckpt_checkpoint_tensor(ckpt, t.name, &by_name) != MMCKPT_OK || by_name.data != t.data) mismatches++;
          char hex[65];
          sha256_hex(t.data, static_cast<size_t>(t.nbytes), hex);
          if (expected_hash[i] != hex) mismatches++;
        }
        // Errors on one thread do not disturb another's.
        mmckpt_tensor t;
        if (mmckpt_checkpoint_tensor(ckpt, "missing", &t) != MMCKPT_ERR_NOT_FOUND) mismatches++;
        if (std::string(mmckpt_last_error()).find("missing") == std::string::npos) mismatches++;
      }
    });
  }
  for (auto &t : threads) t.join();
  CHECK(mismatches.load() == 0);
  mmckpt_checkpoint_close(ckpt);
  mmckpt_dtype d = MMCKPT_DTYPE_BFLOAT16;
  CHECK(mmckpt_dtype_itemsize(d) == 2);
  return test_finish("test_cpp");
}
