// include/mmckpt.hpp, the C++ wrapper: handles, errors, iteration, element access, values,
// loads and the per-tensor callable. Built as C++17 (test_hpp17) and C++20 (test_hpp20).
#include "mmckpt.hpp"
#include "support.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// Handles are move-only.
static_assert(!std::is_copy_constructible_v<mmckpt::checkpoint>);
static_assert(!std::is_copy_assignable_v<mmckpt::checkpoint>);
static_assert(std::is_nothrow_move_constructible_v<mmckpt::checkpoint>);
static_assert(std::is_nothrow_move_assignable_v<mmckpt::checkpoint>);
static_assert(!std::is_copy_constructible_v<mmckpt::module>);
static_assert(std::is_nothrow_move_constructible_v<mmckpt::module>);
static_assert(!std::is_copy_constructible_v<mmckpt::load_report>);
static_assert(std::is_nothrow_move_assignable_v<mmckpt::load_report>);
static_assert(std::is_base_of_v<std::runtime_error, mmckpt::error>);

std::string path(const char *relative) { return data_path(relative); }

// Runs f, which must throw mmckpt::error with this status and a message containing `needle`.
template <class F>
void expect_error(int line, mmckpt_status status, const std::string &needle, F f) {
  try {
    f();
    fprintf(stderr, "test_hpp.cpp:%d: no mmckpt::error thrown\n", line);
    test_failures++;
  } catch (const mmckpt::error &e) {
    if (e.status() != status || std::string(e.what()).find(needle) == std::string::npos) {
      fprintf(stderr, "test_hpp.cpp:%d: mmckpt::error %u (%s) \"%s\", expected %u mentioning \"%s\"\n",
              line, static_cast<unsigned>(e.status()), e.status_text(), e.what(),
              static_cast<unsigned>(status), needle.c_str());
      test_failures++;
    }
  }
}
#define EXPECT_ERROR(status, needle, ...) expect_error(__LINE__, status, needle, __VA_ARGS__)

void test_errors_and_handles() {
  EXPECT_ERROR(MMCKPT_ERR_IO, "no_such_file.pt", [] { mmckpt::checkpoint c(path("no_such_file.pt")); });
  mmckpt::checkpoint a(path("fixtures/forms.pt"));
  CHECK(a && a.size() == 16 && a.format() == "zip");
  const mmckpt_checkpoint *raw = a.get();
  mmckpt::checkpoint b(std::move(a));
  CHECK(!a && b.get() == raw);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_ERROR(MMCKPT_ERR_STATE, "moved from", [&] { (void)a.size(); });
  // Move-assigning closes the checkpoint held before (ASan and valgrind see a leak otherwise).
  mmckpt::checkpoint c(path("fixtures/proto4.pt"));
  c = std::move(b);
  CHECK(c.get() == raw && c.size() == 16);
  EXPECT_ERROR(MMCKPT_ERR_NOT_FOUND, "missing", [&] { c.tensor("missing"); });
  CHECK(!c.find("missing"));
  CHECK(c.find("contiguous") && c.find("contiguous")->name() == "contiguous");
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "out of range", [&] { c.name_at(16); });
  // A status and its text.
  try {
    c.tensor("nope");
  } catch (const mmckpt::error &e) {
    CHECK(std::string(e.status_text()) == mmckpt_status_str(MMCKPT_ERR_NOT_FOUND));
  }
  // A strict open refuses a global outside the allowlist; the options builder reaches C.
  EXPECT_ERROR(MMCKPT_ERR_UNSAFE, "", [] {
    mmckpt::checkpoint s(path("data/bad/global_os_system.pt"), mmckpt::open_options().strict());
  });
  mmckpt::checkpoint relaxed(path("data/bad/global_os_system.pt"), mmckpt::open_options().strict().strict(false));
  mmckpt::checkpoint read(path("fixtures/nested.pt"), mmckpt::open_options().read().root("model"));
  CHECK(read.size() == 4);
  for (const mmckpt::tensor &t : read) CHECK(!t.is_mapped());
  CHECK(mmckpt::version() == mmckpt_version());
  CHECK(mmckpt::dtype_name(MMCKPT_DTYPE_BFLOAT16) == "bfloat16" && mmckpt::itemsize(MMCKPT_DTYPE_FLOAT64) == 8);
}

void test_iteration_and_access() {
  mmckpt::checkpoint ckpt(path("fixtures/forms.pt"));
  size_t i = 0;
  for (mmckpt::tensor t : ckpt) {
    CHECK(t.name() == ckpt.name_at(i));
    CHECK(t.name() == mmckpt_checkpoint_name_at(ckpt.get(), i));
    i++;
  }
  CHECK(i == ckpt.size());
  std::vector<std::string_view> names;
  for (std::string_view name : ckpt.names()) names.push_back(name);
  CHECK(names.size() == 16 && names.front() == "scalar" && names.back() == "half_step");

  // data<T>(): the right type on a contiguous tensor.
  const mmckpt::tensor contiguous = ckpt.tensor("contiguous");
  CHECK(contiguous.shape().to_vector() == (std::vector<int64_t>{4, 6}));
  CHECK(contiguous.strides().to_vector() == (std::vector<int64_t>{6, 1}));
  CHECK(contiguous.is_contiguous() && contiguous.file_offset().has_value());
  const float *values = contiguous.data<float>();
  CHECK(values == contiguous.raw_data());
  // Refused: another element type, a non-contiguous tensor.
  EXPECT_ERROR(MMCKPT_ERR_DTYPE_MISMATCH, "'contiguous' is float32, not float64",
               [&] { contiguous.data<double>(); });
  EXPECT_ERROR(MMCKPT_ERR_DTYPE_MISMATCH, "is int64, not int32",
               [&] { ckpt.tensor("buffer_int64").strided<int32_t>(); });
  const mmckpt::tensor transpose = ckpt.tensor("transpose");
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "'transpose' is not contiguous (strides [1, 6] for shape [6, 8])",
               [&] { transpose.data<float>(); });
  // The strided accessor and to_vector agree with a row-major gather, on every layout.
  for (const char *name : {"transpose", "narrow", "as_strided", "expanded", "slice", "shared.b", "scalar", "empty"}) {
    const mmckpt::tensor t = ckpt.tensor(name);
    const std::vector<float> copy = t.to_vector<float>();
    unsigned char *gathered = gather_row_major(&t.raw());
    CHECK(copy.size() == t.numel());
    CHECK(copy.empty() || std::memcmp(copy.data(), gathered, copy.size() * sizeof(float)) == 0);
    free(gathered);
  }
  const auto view = transpose.strided<float>();
  const std::vector<float> rows = transpose.to_vector<float>();
  for (int64_t r = 0; r < 6; r++)
    for (int64_t col = 0; col < 8; col++) CHECK(view(r, col) == rows[r * 8 + col] && &view.at(r, col) == &view(r, col));
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "index 8 is out of range for dimension 1 of size 8",
               [&] { view.at(0, 8); });
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "has 2 dimensions, indexed with 1", [&] { view.at(0); });
  CHECK(ckpt.tensor("scalar").strided<float>()() == ckpt.tensor("scalar").to_vector<float>()[0]);
  // An odd-offset float16 slice widens to the same floats as mmckpt's own conversion.
  const mmckpt::tensor half = ckpt.tensor("half_step");
  EXPECT_ERROR(MMCKPT_ERR_DTYPE_MISMATCH, "is float16, not float32", [&] { half.data<float>(); });
  mmckpt::module widened = mmckpt::module::empty();
  widened.add("half_step", MMCKPT_DTYPE_FLOAT32, {3});
  widened.load(ckpt, mmckpt::load_options().assign().convert().strict(false));
  const std::vector<float> converted = widened.get("half_step").to_vector<float>();
  CHECK(half.to_vector<float>() == converted);
}

void test_half_and_bfloat16() {
  mmckpt::checkpoint ckpt(path("fixtures/dtypes.pt"));
  mmckpt::module m = mmckpt::module::empty("Widened");
  m.add("float16", MMCKPT_DTYPE_FLOAT32, {3, 5});
  m.add("bfloat16", MMCKPT_DTYPE_FLOAT32, {3, 5});
  const mmckpt::load_report report = m.load(ckpt, mmckpt::load_options().assign().convert().strict(false));
  CHECK(report.missing().empty() && report.unexpected().size() == ckpt.size() - 2);
  for (const char *name : {"float16", "bfloat16"}) {
    const std::vector<float> mine = ckpt.tensor(name).to_vector<float>();
    const mmckpt::tensor theirs = m.get(name);
    CHECK(theirs.dtype() == MMCKPT_DTYPE_FLOAT32 && mine.size() == 15);
    CHECK(std::memcmp(mine.data(), theirs.data<float>(), 15 * sizeof(float)) == 0);
  }
  // Every float16 bit pattern (subnormals, infinities, NaN) widens as mmckpt converts it.
  for (uint32_t i = 0; i < 65536; i++) {
    const float f = mmckpt::detail::half_bits_to_float(static_cast<uint16_t>(i));
    const unsigned exponent = (i >> 10) & 0x1f, mantissa = i & 0x3ff;
    const double magnitude = exponent == 0 ? std::ldexp(mantissa, -24) : std::ldexp(1024 + mantissa, static_cast<int>(exponent) - 25);
    if (exponent == 0x1f) {
      CHECK(mantissa == 0 ? std::isinf(f) : std::isnan(f));
    } else {
      CHECK(static_cast<double>(f) == ((i & 0x8000) ? -magnitude : magnitude));
    }
    CHECK(std::signbit(f) == ((i & 0x8000) != 0));
  }
}

void test_values() {
  mmckpt::checkpoint ckpt(path("fixtures/nested.pt"));
  CHECK(ckpt.value<int64_t>("epoch") == 3);
  CHECK(ckpt.value<std::string>("epoch") == "3");
  CHECK(ckpt.value<std::string>("step") == "1180591620717411303424");
  EXPECT_ERROR(MMCKPT_ERR_LIMIT, "", [&] { ckpt.value<int64_t>("step"); });
  CHECK(ckpt.value_kind("step") == MMCKPT_VALUE_BIGINT);
  CHECK(ckpt.value_kind("args") == MMCKPT_VALUE_OBJECT);
  CHECK(!ckpt.value_kind("no.such.path"));
  CHECK(!ckpt.find_value<int64_t>("no.such.path"));
  CHECK(ckpt.find_value<int64_t>("args.hidden") == 16);
  EXPECT_ERROR(MMCKPT_ERR_NOT_FOUND, "", [&] { ckpt.value<double>("no_such_value"); });
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "name", [&] { ckpt.value<int64_t>("name"); });
  CHECK(ckpt.value<bool>("flags.0") == true);
  CHECK(ckpt.value_kind("flags.1") == MMCKPT_VALUE_NONE);
  CHECK(ckpt.value_class("args") == "argparse.Namespace");
  const std::vector<std::string> keys = ckpt.child_keys("args");
  CHECK(keys == (std::vector<std::string>{"hidden", "scale"}));
  CHECK(ckpt.child_keys("flags") == (std::vector<std::string>{"0", "1"}));
  // Strings and bytes, compared with what the C calls give.
  for (const char *p : {"name", "blob", "lr"}) {
    mmckpt_value_kind kind;
    CHECK_OK(mmckpt_checkpoint_value_kind(ckpt.get(), p, &kind));
    if (kind == MMCKPT_VALUE_FLOAT) {
      double v;
      CHECK_OK(mmckpt_checkpoint_value_float(ckpt.get(), p, &v));
      CHECK(ckpt.value<double>(p) == v && ckpt.value<std::complex<double>>(p) == std::complex<double>(v, 0));
      continue;
    }
    size_t len = 0;
    CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt.get(), p, nullptr, 0, &len), MMCKPT_ERR_BUFFER_TOO_SMALL);
    std::string expected(len + 1, '\0');
    CHECK_OK(mmckpt_checkpoint_value_string(ckpt.get(), p, &expected[0], expected.size(), &len));
    expected.resize(len);
    CHECK(ckpt.value<std::string>(p) == expected && !expected.empty());
  }
}

std::string read_text_file(const std::string &file) {
  size_t len = 0;
  unsigned char *bytes = read_file(file.c_str(), &len);
  if (!bytes) throw std::runtime_error("cannot read " + file);
  std::string text(reinterpret_cast<char *>(bytes), len);
  free(bytes);
  return text;
}

struct stop_loading : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void test_modules_and_loads() {
  mmckpt::checkpoint ckpt(path("fixtures/engine/net.pt"));
  const std::string spec = read_text_file(path("fixtures/engine/net.spec.json"));
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "", [] { mmckpt::module::from_spec("{\"type\": \"Nope\"}"); });

  // Assign: every entry a view into the checkpoint, reported to a callable in file order.
  mmckpt::module net = mmckpt::module::from_spec(spec);
  CHECK(net.size() == 13);
  for (const mmckpt::tensor &e : net) CHECK(!e.has_data());
  EXPECT_ERROR(MMCKPT_ERR_STATE, "'features.0.weight' has no data", [&] { net.get("features.0.weight").data<float>(); });
  std::vector<std::string> seen;
  uint64_t last_offset = 0;
  const mmckpt::load_report report = net.load(ckpt, mmckpt::load_options().assign().on_tensor([&](const mmckpt::tensor &t) {
    CHECK(t.file_offset().value_or(0) >= last_offset);
    last_offset = t.file_offset().value_or(0);
    seen.emplace_back(t.name());
  }));
  CHECK(report.message() == "<All keys matched successfully>");
  CHECK(seen.size() == 13);
  for (const mmckpt::tensor &e : net) {
    const mmckpt::tensor c = ckpt.tensor(e.name());
    CHECK(e.raw_data() == c.raw_data() && e.is_mapped());
  }
  CHECK(net.get("classifier.3.weight").dtype() == MMCKPT_DTYPE_FLOAT16);  // assign keeps the file's dtype
  CHECK(net.get("features.1.num_batches_tracked").data<int64_t>()[0] == 7);
  CHECK(!net.find("nope") && net.find("features.0.bias"));

  // A callable that throws stops the load; the exception comes back as it was.
  mmckpt::module again = mmckpt::module::from_spec(spec);
  int calls = 0;
  try {
    again.load(ckpt, mmckpt::load_options().assign().on_tensor([&](const mmckpt::tensor &t) {
      if (++calls == 3) throw stop_loading("stopped at " + std::string(t.name()));
    }));
    CHECK(false);
  } catch (const stop_loading &e) {
    CHECK(calls == 3 && std::string(e.what()).find("stopped at features.1.") == 0);
  }
  // One returning false stops it with MMCKPT_ERR_CALLBACK.
  calls = 0;
  EXPECT_ERROR(MMCKPT_ERR_CALLBACK, "", [&] {
    again.load(ckpt, mmckpt::load_options().assign().on_tensor([&](const mmckpt::tensor &) { return ++calls < 2; }));
  });
  CHECK(calls == 2);
  // mmckpt::error thrown by a wrapper call inside the callable (the module being loaded refuses
  // reads) travels back too, with its status.
  EXPECT_ERROR(MMCKPT_ERR_STATE, "", [&] {
    again.load(ckpt, mmckpt::load_options().assign().on_tensor([&](const mmckpt::tensor &) { again.at(0); }));
  });
  // Any callable: move-only, a function pointer; the options outlive the callable's source.
  auto counter = std::make_unique<int>(0);
  mmckpt::load_options counting = mmckpt::load_options().assign().on_tensor(
      [c = std::move(counter)](const mmckpt::tensor &) { ++*c; });
  mmckpt::load_report first = again.load(ckpt, counting);
  mmckpt::load_report second = again.load(ckpt, counting);
  second = std::move(first);
  CHECK(second.message() == "<All keys matched successfully>");
  static int plain_calls = 0;
  void (*plain)(const mmckpt::tensor &) = [](const mmckpt::tensor &) { plain_calls++; };
  again.load(ckpt, mmckpt::load_options().assign().on_tensor(plain));
  CHECK(plain_calls == 13);

  // Copy into module-owned memory, converting float16 to the module's float32.
  mmckpt::module copied = mmckpt::module::from_spec(spec);
  EXPECT_ERROR(MMCKPT_ERR_STATE, "", [&] { copied.load(ckpt); });
  copied.materialize();
  copied.load(ckpt);
  const mmckpt::tensor fc1 = copied.get("classifier.1.weight");
  CHECK(fc1.is_contiguous() && !fc1.is_mapped() && fc1.to_vector<float>() == ckpt.tensor("classifier.1.weight").to_vector<float>());
  CHECK(copied.get("classifier.3.weight").to_vector<float>() == ckpt.tensor("classifier.3.weight").to_vector<float>());
  // Into caller memory bound as a vector.
  std::vector<float> bias(10);
  copied.bind("classifier.3.bias", bias);
  copied.load(ckpt);
  CHECK(bias == ckpt.tensor("classifier.3.bias").to_vector<float>());
  std::vector<double> wrong(10);
  EXPECT_ERROR(MMCKPT_ERR_DTYPE_MISMATCH, "'classifier.3.bias' is float32, not float64",
               [&] { copied.bind("classifier.3.bias", wrong); });
  EXPECT_ERROR(MMCKPT_ERR_BUFFER_TOO_SMALL, "", [&] { copied.bind("classifier.3.bias", bias.data(), 4); });

  // Strict and non-strict loads under a prefix, with torch's wording and the report's lists.
  mmckpt::checkpoint nested(path("fixtures/nested.pt"));
  mmckpt::module small = mmckpt::module::empty("Small");
  small.add("fc.weight", MMCKPT_DTYPE_FLOAT32, nested.tensor("model.fc.weight").shape().to_vector());
  small.add("extra", MMCKPT_DTYPE_FLOAT32, {2}, MMCKPT_ENTRY_BUFFER);
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "", [&] { small.add("extra", MMCKPT_DTYPE_FLOAT32, {2}); });
  EXPECT_ERROR(MMCKPT_ERR_KEY_MISMATCH, "Error(s) in loading state_dict for Small", [&] {
    small.load(nested, mmckpt::load_options().assign().prefix("model"));
  });
  const mmckpt::load_report loose = small.load(nested, mmckpt::load_options().assign().prefix("model").strict(false));
  CHECK(loose.missing() == (std::vector<std::string_view>{"extra"}));
  CHECK(loose.unexpected().size() == 3);
  CHECK(loose.message().find("_IncompatibleKeys(missing_keys=['extra']") == 0);
  CHECK(small.get("fc.weight").raw_data() == nested.tensor("model.fc.weight").raw_data());
  CHECK(small.get("extra").is_buffer());

  // A module built from a checkpoint; moved modules keep their views valid; an assign-loaded
  // module outlives its checkpoint.
  mmckpt::module mirror;
  {
    mmckpt::checkpoint temporary(path("fixtures/forms.pt"));
    mmckpt::module built = mmckpt::module::from_checkpoint(temporary);
    built.load(temporary, mmckpt::load_options().assign());
    mirror = std::move(built);
    EXPECT_ERROR(MMCKPT_ERR_STATE, "moved from", [&] { (void)built.size(); });
  }
  CHECK(mirror.size() == 16 && mirror.get("contiguous").data<float>()[0] == mirror.get("contiguous").to_vector<float>()[0]);
  mmckpt::checkpoint moved_from;
  EXPECT_ERROR(MMCKPT_ERR_STATE, "moved from", [&] { mmckpt::module::from_checkpoint(moved_from); });
  EXPECT_ERROR(MMCKPT_ERR_STATE, "moved from", [&] { mirror.load(moved_from); });
}

void test_refusals_and_other_types() {
  // Range-for stops at an entry mmckpt cannot represent, naming it; names() lists every entry.
  mmckpt::checkpoint exotic(path("fixtures/exotic.pt"));
  std::vector<std::string> reached;
  EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "tensor 'quantized'", [&] {
    for (const mmckpt::tensor &t : exotic) reached.emplace_back(t.name());
  });
  CHECK(reached == (std::vector<std::string>{"plain"}));
  size_t representable = 0;
  for (std::string_view name : exotic.names()) {
    try {
      exotic.tensor(name);
      representable++;
    } catch (const mmckpt::error &e) {
      CHECK(e.status() == MMCKPT_ERR_UNSUPPORTED);
    }
  }
  CHECK(representable == 4);
  // Lazily conjugated or negated tensors: their values are not their bytes, so typed access
  // refuses them.
  EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "'neg' is lazily negated", [&] { exotic.tensor("neg").data<float>(); });
  EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "'neg' is lazily negated", [&] { exotic.tensor("neg").to_vector<float>(); });
  EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "'conj' is lazily conjugated",
               [&] { exotic.tensor("conj").strided<std::complex<float>>(); });
  CHECK(exotic.tensor("plain_int").to_vector<int32_t>().size() == 4);

  // Every C++ element type reads as a row-major gather of its dtype.
  mmckpt::checkpoint dtypes(path("fixtures/dtypes.pt"));
  auto same_bytes = [&](const char *name, auto sample) {
    using T = decltype(sample);
    const mmckpt::tensor t = dtypes.tensor(name);
    const std::vector<T> values = t.to_vector<T>();
    unsigned char *gathered = gather_row_major(&t.raw());
    bool equal = values.size() == t.numel();
    for (size_t i = 0; equal && i < values.size(); i++) {
      T expected;
      std::memcpy(static_cast<void *>(&expected), gathered + i * sizeof(T), sizeof(T));
      equal = values[i] == expected && t.data<T>()[i] == expected;
    }
    free(gathered);
    CHECK(equal);
  };
  same_bytes("float64", double());
  same_bytes("int8", int8_t());
  same_bytes("uint8", uint8_t());
  same_bytes("int16", int16_t());
  same_bytes("uint16", uint16_t());
  same_bytes("int32", int32_t());
  same_bytes("uint32", uint32_t());
  same_bytes("int64", int64_t());
  same_bytes("uint64", uint64_t());
  same_bytes("complex64", std::complex<float>());
  same_bytes("complex128", std::complex<double>());
  const mmckpt::tensor flags = dtypes.tensor("bool");
  const std::vector<bool> bits = flags.to_vector<bool>();
  const bool *stored = flags.data<bool>();
  bool equal = bits.size() == 15;
  for (size_t i = 0; equal && i < bits.size(); i++) equal = bits[i] == stored[i];
  CHECK(equal);
  EXPECT_ERROR(MMCKPT_ERR_DTYPE_MISMATCH, "'float8_e4m3fn' is float8_e4m3fn, not uint8",
               [&] { dtypes.tensor("float8_e4m3fn").to_vector<uint8_t>(); });

  // Caller memory bound at an address not aligned for the element type: typed pointers are
  // refused, copies work.
  mmckpt::module m = mmckpt::module::empty();
  m.add("w", MMCKPT_DTYPE_FLOAT32, {2});
  alignas(8) unsigned char storage[16] = {};
  m.bind("w", storage + 1, 8);
  EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "'w' is not aligned", [&] { m.get("w").data<float>(); });
  const float two[2] = {1.5f, -2.0f};
  std::memcpy(storage + 1, two, sizeof two);
  CHECK(m.get("w").to_vector<float>() == (std::vector<float>{1.5f, -2.0f}));
}

// contiguous(): the engine's strided weights come back row-major, copied only where needed,
// and the report names the copies; data<float>() then accepts every float32 weight.
void test_contiguous_loads() {
  mmckpt::checkpoint ckpt(path("fixtures/engine/net.pt"));
  const std::string spec = read_text_file(path("fixtures/engine/net.spec.json"));
  mmckpt::module plain = mmckpt::module::from_spec(spec);
  plain.load(ckpt, mmckpt::load_options().assign().convert());
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "not contiguous", [&] { plain.get("classifier.1.weight").data<float>(); });

  mmckpt::module net = mmckpt::module::from_spec(spec);
  const mmckpt::load_report report = net.load(ckpt, mmckpt::load_options().assign().convert().contiguous());
  const std::vector<std::string_view> copied = report.copied();
  CHECK(copied == (std::vector<std::string_view>{"features.4.weight", "classifier.1.weight", "classifier.3.weight"}));
  for (const mmckpt::tensor &e : net) {
    CHECK(e.is_contiguous());
    const bool was_copied = std::find(copied.begin(), copied.end(), e.name()) != copied.end();
    CHECK(e.is_mapped() == !was_copied);
  }
  // Prefetching changes when bytes are read, never what is loaded.
  mmckpt::module fetched = mmckpt::module::from_spec(spec);
  fetched.load(ckpt, mmckpt::load_options().assign().convert().contiguous().prefetch());
  for (const mmckpt::tensor &e : net)
    if (e.dtype() == MMCKPT_DTYPE_FLOAT32) CHECK(fetched.get(e.name()).to_vector<float>() == e.to_vector<float>());
  // Same elements as the strided view of the plain load, now in row-major order.
  const mmckpt::tensor w = net.get("classifier.1.weight");
  const auto view = plain.get("classifier.1.weight").strided<float>();
  const float *rows = w.data<float>();
  for (int64_t o = 0; o < view.size(0); o++)
    for (int64_t i = 0; i < view.size(1); i++) CHECK(rows[o * view.size(1) + i] == view(o, i));
}

// The I/O and integrity options reach the C flags: the same tensors whichever way the file
// comes in; misaligned storages handed out as they are refuse data<T>() but copy fine.
void test_open_modes() {
  const std::string legacy = path("fixtures/legacy_odd.pt");
  mmckpt::checkpoint mapped(legacy);
  mmckpt::checkpoint by_pread(legacy, mmckpt::open_options().pread());
  mmckpt::checkpoint automatic(legacy, mmckpt::open_options().auto_io());
  mmckpt::checkpoint as_is(legacy, mmckpt::open_options().unaligned());
  CHECK(mapped.size() == by_pread.size() && mapped.size() == as_is.size());
  size_t misaligned = 0;
  for (size_t i = 0; i < mapped.size(); i++) {
    const mmckpt::tensor a = mapped.tensor_at(i), b = by_pread.tensor_at(i), c = automatic.tensor_at(i),
                         d = as_is.tensor_at(i);
    CHECK(!b.is_mapped());
    if (a.dtype() == MMCKPT_DTYPE_FLOAT32) {
      CHECK(a.to_vector<float>() == b.to_vector<float>() && a.to_vector<float>() == c.to_vector<float>());
      CHECK(a.to_vector<float>() == d.to_vector<float>());
      if (reinterpret_cast<uintptr_t>(d.raw_data()) % alignof(float) != 0) {
        misaligned++;
        EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "not aligned", [&] { d.strided<float>(); });
      }
    } else if (a.dtype() == MMCKPT_DTYPE_FLOAT64) {
      CHECK(a.to_vector<double>() == b.to_vector<double>() && a.to_vector<double>() == c.to_vector<double>());
      CHECK(a.to_vector<double>() == d.to_vector<double>());
      if (reinterpret_cast<uintptr_t>(d.raw_data()) % alignof(double) != 0) {
        misaligned++;
        EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "not aligned", [&] { d.strided<double>(); });
      }
    }
  }
  CHECK(misaligned > 0);
  EXPECT_ERROR(MMCKPT_ERR_INVALID_ARGUMENT, "exclude each other",
               [&] { mmckpt::checkpoint c(legacy, mmckpt::open_options().read().pread()); });
  mmckpt::checkpoint checked(path("fixtures/nested.pt"), mmckpt::open_options().verify_crc());
  CHECK(checked.size() > 0);
  EXPECT_ERROR(MMCKPT_ERR_UNSUPPORTED, "checksums",
               [&] { mmckpt::checkpoint c(legacy, mmckpt::open_options().verify_crc()); });
}

}  // namespace

int main(int argc, char **argv) {
  test_init(argc, argv);
  try {
    test_errors_and_handles();
    test_iteration_and_access();
    test_half_and_bfloat16();
    test_values();
    test_refusals_and_other_types();
    test_modules_and_loads();
    test_contiguous_loads();
    test_open_modes();
  } catch (const std::exception &e) {
    fprintf(stderr, "unexpected exception: %s\n", e.what());
    test_failures++;
  }
  return test_finish("test_hpp");
}
