// The header from C++17, and one checkpoint read by 8 threads at once.
#include "support.h"

#include <atomic>
#include <cstring>
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
  // Several threads load the one checkpoint into modules of their own, assign and copy.
  std::atomic<int> load_failures{0};
  std::vector<std::thread> loaders;
  for (int k = 0; k < 4; k++) {
    loaders.emplace_back([&, k] {
      mmckpt_module *m = nullptr;
      if (mmckpt_module_from_checkpoint(ckpt, &m) != MMCKPT_OK) { load_failures++; return; }
      mmckpt_load_options opts;
      mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
      if (k % 2 == 0) opts.flags |= MMCKPT_LOAD_ASSIGN;
      else if (mmckpt_module_materialize(m) != MMCKPT_OK) load_failures++;
      if (mmckpt_module_load(m, ckpt, &opts, nullptr) != MMCKPT_OK) load_failures++;
      for (size_t i = 0; i < mmckpt_module_count(m); i++) {
        mmckpt_tensor e, c;
        if (mmckpt_module_at(m, i, &e) != MMCKPT_OK || mmckpt_checkpoint_tensor(ckpt, e.name, &c) != MMCKPT_OK) {
          load_failures++;
          continue;
        }
        bool same_pointer = e.data == c.data;
        if (same_pointer != (k % 2 == 0)) load_failures++;
        if (c.flags & MMCKPT_TENSOR_CONTIGUOUS) {
          if (e.nbytes != c.nbytes || std::memcmp(e.data, c.data, static_cast<size_t>(c.nbytes)) != 0) load_failures++;
        }
      }
      mmckpt_module_free(m);
    });
  }
  for (auto &t : loaders) t.join();
  CHECK(load_failures.load() == 0);
  mmckpt_checkpoint_close(ckpt);
  mmckpt_dtype d = MMCKPT_DTYPE_BFLOAT16;
  CHECK(mmckpt_dtype_itemsize(d) == 2);
  return test_finish("test_cpp");
}
