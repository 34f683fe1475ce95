// mmckpt.hpp — a header-only C++17 wrapper over the C API of mmckpt.h (and nothing else).
//
//   mmckpt::checkpoint ckpt("model.pt");                       // mmckpt::error on failure
//   auto net = mmckpt::module::from_spec(spec_json);
//   net.load(ckpt, mmckpt::load_options().assign());           // zero-copy views
//   for (const mmckpt::tensor &t : net) std::cout << t.name() << "\n";
//   const float *w = net.get("fc.weight").data<float>();      // checked: dtype, contiguity
//
// Conventions:
//  - checkpoint, module and load_report own one C handle each: move-only, freed by their
//    destructor. A moved-from object holds no handle; using it throws (MMCKPT_ERR_STATE).
//  - Every failure throws mmckpt::error, which carries the mmckpt_status and the message
//    (mmckpt_last_error() for C calls). Checks made here (element type, contiguity) use the
//    same statuses.
//  - mmckpt::tensor is a borrowed description (as mmckpt_tensor): its name, shape and data stay
//    valid while the checkpoint or module it came from lives and, for a module, until the
//    entry is next changed by a load, materialize or bind.
//  - Names are std::string_view; values read from a checkpoint are copied out (std::string,
//    std::optional where a path may name nothing).
#ifndef MMCKPT_HPP
#define MMCKPT_HPP

#include "mmckpt.h"

#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace mmckpt {

// ---------------------------------------------------------------------------------------------
// Errors

/// A failed call: the C status and its message.
class error : public std::runtime_error {
 public:
  error(mmckpt_status status, const std::string &message)
      : std::runtime_error(message), status_(status) {}

  mmckpt_status status() const noexcept { return status_; }
  /// Static text describing the status (mmckpt_status_str).
  const char *status_text() const noexcept { return mmckpt_status_str(status_); }

 private:
  mmckpt_status status_;
};

namespace detail {

/// Throws mmckpt::error with this thread's last error when a C call failed.
inline void check(mmckpt_status status) {
  if (status != MMCKPT_OK) throw error(status, mmckpt_last_error());
}

inline std::string quoted(std::string_view name) {
  std::string s = "'";
  s.append(name.data(), name.size());
  s += "'";
  return s;
}

/// The one place the C option structs are initialised: at the version this header was compiled
/// with, so that a newer library reads only the fields this header knows.
inline mmckpt_open_options default_open_options() {
  mmckpt_open_options opts;
  check(mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION));
  return opts;
}

inline mmckpt_load_options default_load_options() {
  mmckpt_load_options opts;
  check(mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION));
  return opts;
}

/// The ask-for-the-size-then-copy protocol of the C calls that copy text into a buffer:
/// `call(buf, cap, &len)`.
template <class Call>
std::string read_text(Call call) {
  size_t len = 0;
  mmckpt_status status = call(nullptr, 0, &len);
  if (status != MMCKPT_ERR_BUFFER_TOO_SMALL) {
    check(status);
    return std::string();
  }
  std::string text(len + 1, '\0');
  check(call(&text[0], text.size(), &len));
  text.resize(len);
  return text;
}

/// Random-access-free iteration by index over a handle: `get(owner, index)`.
template <class Owner, class Value, Value (*Get)(const Owner &, size_t)>
class index_iterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = Value;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = Value;

  index_iterator() = default;
  index_iterator(const Owner *owner, size_t index) : owner_(owner), index_(index) {}
  Value operator*() const { return Get(*owner_, index_); }
  index_iterator &operator++() {
    ++index_;
    return *this;
  }
  index_iterator operator++(int) {
    index_iterator before = *this;
    ++index_;
    return before;
  }
  bool operator==(const index_iterator &o) const { return index_ == o.index_ && owner_ == o.owner_; }
  bool operator!=(const index_iterator &o) const { return !(*this == o); }

 private:
  const Owner *owner_ = nullptr;
  size_t index_ = 0;
};

template <class Iterator>
class range {
 public:
  range(Iterator first, Iterator last) : first_(first), last_(last) {}
  Iterator begin() const { return first_; }
  Iterator end() const { return last_; }

 private:
  Iterator first_, last_;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Library facts

/// The library's version text ("0.1.0").
inline std::string_view version() { return mmckpt_version(); }

/// torch's name of a dtype ("bfloat16"); "" for a value that is not a dtype.
inline std::string_view dtype_name(mmckpt_dtype dtype) {
  const char *name = mmckpt_dtype_name(dtype);
  return name ? std::string_view(name) : std::string_view();
}

/// Bytes per element; 0 for a value that is not a dtype.
inline size_t itemsize(mmckpt_dtype dtype) { return mmckpt_dtype_itemsize(dtype); }

/// The dtype whose elements are a T, for the element types C++ has.
template <class T>
struct dtype_of;
template <> struct dtype_of<float> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_FLOAT32; };
template <> struct dtype_of<double> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_FLOAT64; };
template <> struct dtype_of<int8_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_INT8; };
template <> struct dtype_of<uint8_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_UINT8; };
template <> struct dtype_of<int16_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_INT16; };
template <> struct dtype_of<uint16_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_UINT16; };
template <> struct dtype_of<int32_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_INT32; };
template <> struct dtype_of<uint32_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_UINT32; };
template <> struct dtype_of<int64_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_INT64; };
template <> struct dtype_of<uint64_t> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_UINT64; };
template <> struct dtype_of<bool> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_BOOL; };
template <> struct dtype_of<std::complex<float>> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_COMPLEX64; };
template <> struct dtype_of<std::complex<double>> { static constexpr mmckpt_dtype value = MMCKPT_DTYPE_COMPLEX128; };

// ---------------------------------------------------------------------------------------------
// Tensors

/// A borrowed array of int64_t (a shape or strides).
class dims {
 public:
  dims(const int64_t *values, size_t count) : values_(values), count_(count) {}
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  const int64_t *begin() const { return values_; }
  const int64_t *end() const { return values_ + count_; }
  int64_t operator[](size_t i) const { return values_[i]; }
  std::vector<int64_t> to_vector() const { return std::vector<int64_t>(begin(), end()); }

 private:
  const int64_t *values_;
  size_t count_;
};

/// Elements of type T at any strides: `v(i, j)` reads without checks, `v.at(i, j)` checks
/// the number of indices and each bound.
template <class T>
class strided_view {
 public:
  strided_view(const T *base, const int64_t *shape, const int64_t *strides, size_t ndim,
               std::string_view name)
      : base_(base), shape_(shape), strides_(strides), ndim_(ndim), name_(name) {}

  size_t ndim() const { return ndim_; }
  int64_t size(size_t dim) const { return shape_[dim]; }
  int64_t stride(size_t dim) const { return strides_[dim]; }
  /// Element [0, …, 0].
  const T *base() const { return base_; }

  template <class... Index>
  const T &operator()(Index... index) const {
    const int64_t idx[] = {0, static_cast<int64_t>(index)...};
    int64_t offset = 0;
    for (size_t d = 0; d < sizeof...(Index); d++) offset += idx[d + 1] * strides_[d];
    return base_[offset];
  }

  template <class... Index>
  const T &at(Index... index) const {
    const int64_t idx[] = {0, static_cast<int64_t>(index)...};
    if (sizeof...(Index) != ndim_) {
      throw error(MMCKPT_ERR_INVALID_ARGUMENT,
                  "tensor " + detail::quoted(name_) + " has " + std::to_string(ndim_) +
                      " dimensions, indexed with " + std::to_string(sizeof...(Index)));
    }
    for (size_t d = 0; d < sizeof...(Index); d++) {
      if (idx[d + 1] < 0 || idx[d + 1] >= shape_[d]) {
        throw error(MMCKPT_ERR_INVALID_ARGUMENT,
                    "index " + std::to_string(idx[d + 1]) + " is out of range for dimension " +
                        std::to_string(d) + " of size " + std::to_string(shape_[d]) +
                        " of tensor " + detail::quoted(name_));
      }
    }
    return (*this)(index...);
  }

 private:
  const T *base_;
  const int64_t *shape_;
  const int64_t *strides_;
  size_t ndim_;
  std::string_view name_;
};

namespace detail {

/// float16 and bfloat16 to float: exact (every value of both is a float). The C API has no
/// conversion call for caller buffers yet; when it has one, this is the place to use it.
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // infinity, NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      exponent--;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline float bfloat16_bits_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace detail

/// A tensor's description, borrowed from the checkpoint or module it came from.
class tensor {
 public:
  explicit tensor(const mmckpt_tensor &raw) : raw_(raw) {}

  /// The C description.
  const mmckpt_tensor &raw() const { return raw_; }
  std::string_view name() const { return raw_.name; }
  mmckpt_dtype dtype() const { return raw_.dtype; }
  std::string_view dtype_name() const { return mmckpt::dtype_name(raw_.dtype); }
  size_t ndim() const { return raw_.ndim; }
  dims shape() const { return dims(raw_.shape, raw_.ndim); }
  /// In elements.
  dims strides() const { return dims(raw_.strides, raw_.ndim); }
  int64_t storage_offset() const { return raw_.storage_offset; }
  uint64_t numel() const { return raw_.numel; }
  uint64_t nbytes() const { return raw_.nbytes; }
  /// Equal non-zero ids: the same storage.
  uint64_t storage_id() const { return raw_.storage_id; }
  /// Where element [0, …, 0] lies in the file, if its bytes are the file's.
  std::optional<uint64_t> file_offset() const {
    if (raw_.file_offset == MMCKPT_NO_OFFSET) return std::nullopt;
    return raw_.file_offset;
  }
  uint32_t flags() const { return raw_.flags; }
  bool is_mapped() const { return raw_.flags & MMCKPT_TENSOR_MAPPED; }
  bool is_contiguous() const { return raw_.flags & MMCKPT_TENSOR_CONTIGUOUS; }
  bool is_parameter() const { return raw_.flags & MMCKPT_TENSOR_PARAMETER; }
  bool is_buffer() const { return raw_.flags & MMCKPT_TENSOR_BUFFER; }
  bool requires_grad() const { return raw_.flags & MMCKPT_TENSOR_REQUIRES_GRAD; }
  /// Element [0, …, 0] as stored; nullptr for a meta entry (no data yet).
  const void *raw_data() const { return raw_.data; }
  bool has_data() const { return raw_.data != nullptr; }

  /// The elements, row-major contiguous, as T. Refuses (mmckpt::error) a dtype other than
  /// T's, a tensor that is not contiguous (use strided<T>() or to_vector<T>()), a meta
  /// entry, and a lazily conjugated or negated tensor (its values are not its bytes).
  template <class T>
  const T *data() const {
    check_access<T>();
    if (!is_contiguous()) {
      throw error(MMCKPT_ERR_INVALID_ARGUMENT,
                  "tensor " + detail::quoted(name()) + " is not contiguous (strides " +
                      dims_text(strides()) + " for shape " + dims_text(shape()) +
                      "): use strided<T>() or to_vector<T>()");
    }
    return static_cast<const T *>(raw_.data);
  }

  /// The elements as T at the tensor's strides; refuses what data<T>() refuses except
  /// non-contiguity.
  template <class T>
  strided_view<T> strided() const {
    check_access<T>();
    return strided_view<T>(static_cast<const T *>(raw_.data), raw_.shape, raw_.strides, raw_.ndim,
                           name());
  }

  /// A row-major copy of the elements as T, from any strides. T = float also accepts float16
  /// and bfloat16 tensors (widened exactly).
  template <class T>
  std::vector<T> to_vector() const {
    if constexpr (std::is_same_v<T, float>) {
      if (raw_.dtype == MMCKPT_DTYPE_FLOAT16 || raw_.dtype == MMCKPT_DTYPE_BFLOAT16) {
        const bool half = raw_.dtype == MMCKPT_DTYPE_FLOAT16;
        check_readable();
        std::vector<float> out;
        out.reserve(static_cast<size_t>(raw_.numel));
        const auto *bytes = static_cast<const unsigned char *>(raw_.data);
        for_each_offset([&](int64_t offset) {
          uint16_t bits;
          std::memcpy(&bits, bytes + offset * 2, 2);
          out.push_back(half ? detail::half_bits_to_float(bits)
                             : detail::bfloat16_bits_to_float(bits));
        });
        return out;
      }
    }
    check_dtype<T>();
    check_readable();
    // Byte copies: no alignment needed.
    const auto *bytes = static_cast<const unsigned char *>(raw_.data);
    std::vector<T> out(static_cast<size_t>(raw_.numel));
    size_t n = 0;
    for_each_offset([&](int64_t offset) {
      if constexpr (std::is_same_v<T, bool>) {
        out[n++] = bytes[offset] != 0;  // std::vector<bool> has no element addresses
      } else {
        std::memcpy(&out[n++], bytes + offset * static_cast<int64_t>(sizeof(T)), sizeof(T));
      }
    });
    return out;
  }

 private:
  static std::string dims_text(dims d) {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); i++) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
  }

  void check_has_data() const {
    if (!raw_.data) {
      throw error(MMCKPT_ERR_STATE,
                  "tensor " + detail::quoted(name()) + " has no data (a meta entry)");
    }
  }

  void check_values_are_bytes() const {
    if (raw_.flags & (MMCKPT_TENSOR_CONJ | MMCKPT_TENSOR_NEG)) {
      throw error(MMCKPT_ERR_UNSUPPORTED,
                  "tensor " + detail::quoted(name()) + " is lazily " +
                      ((raw_.flags & MMCKPT_TENSOR_CONJ) ? "conjugated" : "negated") +
                      ": its values are not its stored bytes (read raw_data() and flags())");
    }
  }

  template <class T>
  void check_dtype() const {
    if (raw_.dtype != dtype_of<T>::value) {
      throw error(MMCKPT_ERR_DTYPE_MISMATCH,
                  "tensor " + detail::quoted(name()) + " is " + std::string(dtype_name()) +
                      ", not " + std::string(mmckpt::dtype_name(dtype_of<T>::value)));
    }
  }

  void check_readable() const {
    check_values_are_bytes();
    check_has_data();
  }

  /// What data<T>() and strided<T>() need: T's dtype, values that are the bytes, data, and
  /// T's alignment (caller-bound memory may lack it; mmckpt's own storage never does).
  template <class T>
  void check_access() const {
    check_dtype<T>();
    check_readable();
    if (reinterpret_cast<uintptr_t>(raw_.data) % alignof(T) != 0) {
      throw error(MMCKPT_ERR_UNSUPPORTED,
                  "tensor " + detail::quoted(name()) + " is not aligned for its element type " +
                      "(caller-bound memory, or MMCKPT_OPEN_UNALIGNED): use to_vector<T>()");
    }
  }

  /// Calls f(element offset) for every element in row-major order.
  template <class F>
  void for_each_offset(F f) const {
    if (raw_.numel == 0) return;
    std::vector<int64_t> index(raw_.ndim, 0);
    int64_t offset = 0;
    for (uint64_t n = 0; n < raw_.numel; n++) {
      f(offset);
      for (size_t d = raw_.ndim; d-- > 0;) {
        if (++index[d] < raw_.shape[d]) {
          offset += raw_.strides[d];
          break;
        }
        offset -= (index[d] - 1) * raw_.strides[d];
        index[d] = 0;
      }
    }
  }

  mmckpt_tensor raw_;
};

// ---------------------------------------------------------------------------------------------
// Checkpoints

/// Options for opening a checkpoint: `open_options().strict().root("model")`.
class open_options {
 public:
  /// Refuse any global outside the allowlist (MMCKPT_OPEN_STRICT).
  open_options &strict(bool on = true) { return set(MMCKPT_OPEN_STRICT, on); }
  /// Read the file into memory instead of mapping it (MMCKPT_OPEN_READ).
  open_options &read(bool on = true) { return set(MMCKPT_OPEN_READ, on); }
  /// Prefault every page now (MMCKPT_OPEN_POPULATE).
  open_options &populate(bool on = true) { return set(MMCKPT_OPEN_POPULATE, on); }
  /// No mapping: each storage read with pread when first used (MMCKPT_OPEN_PREAD), for
  /// network filesystems; no access can fault with SIGBUS.
  open_options &pread(bool on = true) { return set(MMCKPT_OPEN_PREAD, on); }
  /// pread on network, parallel and user-space filesystems, else a mapping (MMCKPT_OPEN_AUTO).
  open_options &auto_io(bool on = true) { return set(MMCKPT_OPEN_AUTO, on); }
  /// Check the CRC-32 of every zip record the checkpoint uses (MMCKPT_OPEN_VERIFY_CRC).
  open_options &verify_crc(bool on = true) { return set(MMCKPT_OPEN_VERIFY_CRC, on); }
  /// Hand misaligned little-endian storages out from the mapping as they are
  /// (MMCKPT_OPEN_UNALIGNED): data<T>() and strided<T>() then refuse them; to_vector<T>()
  /// copies.
  open_options &unaligned(bool on = true) { return set(MMCKPT_OPEN_UNALIGNED, on); }
  /// The dotted path of the sub-object whose tensors form the table.
  open_options &root(std::string_view path) {
    root_ = std::string(path);
    return *this;
  }

  /// The C struct; valid while this object lives unchanged.
  mmckpt_open_options c_options() const {
    mmckpt_open_options opts = detail::default_open_options();
    opts.flags |= set_;
    opts.flags &= ~cleared_;
    opts.root = root_ ? root_->c_str() : nullptr;
    return opts;
  }

 private:
  open_options &set(uint32_t flag, bool on) {
    (on ? set_ : cleared_) |= flag;
    (on ? cleared_ : set_) &= ~flag;
    return *this;
  }

  uint32_t set_ = 0, cleared_ = 0;
  std::optional<std::string> root_;
};

/// An open checkpoint (mmckpt_checkpoint). Range-for gives its tensors in table order; an
/// entry mmckpt cannot represent (sparse, quantized) throws when reached: iterate names() and
/// call tensor() per name to skip those.
class checkpoint {
  static mmckpt::tensor get_tensor(const checkpoint &c, size_t i) { return c.tensor_at(i); }
  static std::string_view get_name(const checkpoint &c, size_t i) { return c.name_at(i); }

 public:
  checkpoint() = default;
  explicit checkpoint(const std::string &path, const open_options &opts = open_options()) {
    const mmckpt_open_options c = opts.c_options();
    detail::check(mmckpt_checkpoint_open(path.c_str(), &c, &handle_));
  }
  checkpoint(const checkpoint &) = delete;
  checkpoint &operator=(const checkpoint &) = delete;
  checkpoint(checkpoint &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  checkpoint &operator=(checkpoint &&other) noexcept {
    if (this != &other) {
      mmckpt_checkpoint_close(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~checkpoint() { mmckpt_checkpoint_close(handle_); }

  /// The C handle (still owned by this object).
  const mmckpt_checkpoint *get() const { return handle_; }
  explicit operator bool() const { return handle_ != nullptr; }

  size_t size() const { return mmckpt_checkpoint_tensor_count(live()); }
  /// "zip", "legacy", "torchscript", "sharded".
  std::string_view format() const { return mmckpt_checkpoint_format(live()); }

  mmckpt::tensor tensor_at(size_t index) const {
    mmckpt_tensor t;
    detail::check(mmckpt_checkpoint_tensor_at(live(), index, &t));
    return mmckpt::tensor(t);
  }
  /// The tensor with this name; throws MMCKPT_ERR_NOT_FOUND if none.
  mmckpt::tensor tensor(std::string_view name) const {
    mmckpt_tensor t;
    detail::check(mmckpt_checkpoint_tensor(live(), std::string(name).c_str(), &t));
    return mmckpt::tensor(t);
  }
  /// The tensor with this name, or nullopt if none.
  std::optional<mmckpt::tensor> find(std::string_view name) const {
    mmckpt_tensor t;
    const mmckpt_status status = mmckpt_checkpoint_tensor(live(), std::string(name).c_str(), &t);
    if (status == MMCKPT_ERR_NOT_FOUND) return std::nullopt;
    detail::check(status);
    return mmckpt::tensor(t);
  }
  /// Name of entry `index`, also for entries whose tensor cannot be represented.
  std::string_view name_at(size_t index) const {
    const char *name = mmckpt_checkpoint_name_at(live(), index);
    if (!name) {
      throw error(MMCKPT_ERR_INVALID_ARGUMENT, "entry index " + std::to_string(index) +
                                                   " is out of range (" +
                                                   std::to_string(size()) + " entries)");
    }
    return name;
  }

  using iterator = detail::index_iterator<checkpoint, mmckpt::tensor, &checkpoint::get_tensor>;
  using name_iterator = detail::index_iterator<checkpoint, std::string_view, &checkpoint::get_name>;
  iterator begin() const { return iterator(this, 0); }
  iterator end() const { return iterator(this, size()); }
  detail::range<name_iterator> names() const {
    return {name_iterator(this, 0), name_iterator(this, size())};
  }

  // Values by dotted path ("epoch", "args.hidden", "optimizer.param_groups.0.lr"; "" is the
  // root). A path that names nothing throws MMCKPT_ERR_NOT_FOUND, a value of another kind
  // MMCKPT_ERR_INVALID_ARGUMENT; find_value() gives nullopt for the first instead.

  /// The kind of the value at `path`, or nullopt if the path names nothing.
  std::optional<mmckpt_value_kind> value_kind(std::string_view path) const {
    mmckpt_value_kind kind;
    const mmckpt_status status = mmckpt_checkpoint_value_kind(live(), std::string(path).c_str(), &kind);
    if (status == MMCKPT_ERR_NOT_FOUND) return std::nullopt;
    detail::check(status);
    return kind;
  }

  /// T is bool, int64_t, double, std::complex<double> or std::string (a str's UTF-8, the raw
  /// bytes of bytes, the decimal digits of an int of any size).
  template <class T>
  T value(std::string_view path) const {
    const std::string p(path);
    if constexpr (std::is_same_v<T, bool>) {
      int32_t v;
      detail::check(mmckpt_checkpoint_value_bool(live(), p.c_str(), &v));
      return v != 0;
    } else if constexpr (std::is_same_v<T, int64_t>) {
      int64_t v;
      detail::check(mmckpt_checkpoint_value_int(live(), p.c_str(), &v));
      return v;
    } else if constexpr (std::is_same_v<T, double>) {
      double v;
      detail::check(mmckpt_checkpoint_value_float(live(), p.c_str(), &v));
      return v;
    } else if constexpr (std::is_same_v<T, std::complex<double>>) {
      double re, im;
      detail::check(mmckpt_checkpoint_value_complex(live(), p.c_str(), &re, &im));
      return {re, im};
    } else if constexpr (std::is_same_v<T, std::string>) {
      return detail::read_text([&](char *buf, size_t cap, size_t *len) {
        return mmckpt_checkpoint_value_string(live(), p.c_str(), buf, cap, len);
      });
    } else {
      static_assert(sizeof(T) == 0, "value<T>: T is bool, int64_t, double, std::complex<double> or std::string");
    }
  }

  /// value<T>(path), or nullopt if the path names nothing.
  template <class T>
  std::optional<T> find_value(std::string_view path) const {
    if (!value_kind(path)) return std::nullopt;
    return value<T>(path);
  }

  /// The class of an object value ("argparse.Namespace") or the name a global refers to.
  std::string value_class(std::string_view path) const {
    const std::string p(path);
    return detail::read_text([&](char *buf, size_t cap, size_t *len) {
      return mmckpt_checkpoint_value_class(live(), p.c_str(), buf, cap, len);
    });
  }

  /// The keys of a container's children, in walk order (child path: path + "." + key).
  std::vector<std::string> child_keys(std::string_view path) const {
    const std::string p(path);
    size_t count = 0;
    detail::check(mmckpt_checkpoint_value_child_count(live(), p.c_str(), &count));
    std::vector<std::string> keys;
    keys.reserve(count);
    for (size_t i = 0; i < count; i++) {
      keys.push_back(detail::read_text([&](char *buf, size_t cap, size_t *len) {
        return mmckpt_checkpoint_value_child_key(live(), p.c_str(), i, buf, cap, len);
      }));
    }
    return keys;
  }

 private:
  const mmckpt_checkpoint *live() const {
    if (!handle_) throw error(MMCKPT_ERR_STATE, "mmckpt::checkpoint holds no checkpoint (moved from)");
    return handle_;
  }

  mmckpt_checkpoint *handle_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Modules

/// The outcome of a successful load (mmckpt_load_report): missing and unexpected keys and
/// torch's wording. Its strings live as long as it does.
class load_report {
 public:
  load_report() = default;
  explicit load_report(mmckpt_load_report *handle) : handle_(handle) {}
  load_report(const load_report &) = delete;
  load_report &operator=(const load_report &) = delete;
  load_report(load_report &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  load_report &operator=(load_report &&other) noexcept {
    if (this != &other) {
      mmckpt_load_report_free(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~load_report() { mmckpt_load_report_free(handle_); }

  /// Module entries the checkpoint did not provide, in torch's order.
  std::vector<std::string_view> missing() const {
    std::vector<std::string_view> keys;
    for (size_t i = 0; i < mmckpt_load_report_missing_count(handle_); i++)
      keys.emplace_back(mmckpt_load_report_missing(handle_, i));
    return keys;
  }
  /// Checkpoint keys (prefix stripped) that match no entry.
  std::vector<std::string_view> unexpected() const {
    std::vector<std::string_view> keys;
    for (size_t i = 0; i < mmckpt_load_report_unexpected_count(handle_); i++)
      keys.emplace_back(mmckpt_load_report_unexpected(handle_, i));
    return keys;
  }
  /// Entries an assign load copied instead of viewing (converted, or made row-major), in load
  /// order.
  std::vector<std::string_view> copied() const {
    std::vector<std::string_view> keys;
    for (size_t i = 0; i < mmckpt_load_report_copied_count(handle_); i++)
      keys.emplace_back(mmckpt_load_report_copied(handle_, i));
    return keys;
  }
  /// "<All keys matched successfully>" or "_IncompatibleKeys(missing_keys=[...], ...)".
  std::string_view message() const {
    const char *text = mmckpt_load_report_message(handle_);
    return text ? std::string_view(text) : std::string_view();
  }

 private:
  mmckpt_load_report *handle_ = nullptr;
};

/// Options for module::load, defaults as torch's load_state_dict (strict, copy):
/// `load_options().assign().prefix("model").on_tensor([](const mmckpt::tensor &t) {...})`.
class load_options {
 public:
  /// Bind views into the checkpoint instead of copying (torch's assign=True).
  load_options &assign(bool on = true) { return set(MMCKPT_LOAD_ASSIGN, on); }
  /// Missing or unexpected keys fail the load (on by default).
  load_options &strict(bool on = true) { return set(MMCKPT_LOAD_STRICT, on); }
  /// With assign: keep the module's dtypes, converting where the checkpoint's differ.
  load_options &convert(bool on = true) { return set(MMCKPT_LOAD_CONVERT, on); }
  /// With assign: every entry row-major. Entries the checkpoint stores strided (transposed,
  /// channels_last) are copied into module-owned row-major memory; the rest stay views.
  load_options &contiguous(bool on = true) { return set(MMCKPT_LOAD_CONTIGUOUS, on); }
  /// Bring the storages the load reads in ahead of the copy, in file order and within a
  /// bounded window (MMCKPT_LOAD_PREFETCH): for cold files on slow or network storage.
  load_options &prefetch(bool on = true) { return set(MMCKPT_LOAD_PREFETCH, on); }
  /// Only checkpoint keys under this prefix, stripped ("module.").
  load_options &prefix(std::string_view p) {
    prefix_ = std::string(p);
    return *this;
  }
  /// Called once per loaded entry, in file order, with the entry as bound or copied. Any
  /// callable taking a const mmckpt::tensor &; one that returns bool stops the load by
  /// returning false (mmckpt::error MMCKPT_ERR_CALLBACK). An exception it throws stops the
  /// load and is rethrown, as it was, from module::load.
  template <class F>
  load_options &on_tensor(F &&f) {
    using Fn = std::decay_t<F>;
    static_assert(std::is_invocable_v<Fn &, const tensor &>,
                  "on_tensor: the callable must accept a const mmckpt::tensor &");
    callable_ = std::make_shared<Fn>(std::forward<F>(f));
    invoke_ = [](void *callable, const tensor &t) -> bool {
      Fn &fn = *static_cast<Fn *>(callable);
      if constexpr (std::is_void_v<std::invoke_result_t<Fn &, const tensor &>>) {
        std::invoke(fn, t);
        return true;
      } else {
        return static_cast<bool>(std::invoke(fn, t));
      }
    };
    return *this;
  }

 private:
  friend class module;

  load_options &set(uint32_t flag, bool on) {
    (on ? set_ : cleared_) |= flag;
    (on ? cleared_ : set_) &= ~flag;
    return *this;
  }

  uint32_t set_ = 0, cleared_ = 0;
  std::optional<std::string> prefix_;
  std::shared_ptr<void> callable_;
  bool (*invoke_)(void *, const tensor &) = nullptr;
};

/// A module (mmckpt_module): entries with names, dtypes, shapes and, after a load,
/// materialize or bind, data. Range-for gives its entries in the order they were added.
class module {
  static tensor get_entry(const module &m, size_t i) { return m.at(i); }

 public:
  module() = default;
  /// An empty meta module; `name` is used in load messages as torch uses the class name.
  static module empty(std::string_view name = "Module") {
    module m;
    detail::check(mmckpt_module_new(std::string(name).c_str(), &m.handle_));
    return m;
  }
  /// A meta module from a JSON spec (docs/module-spec.md).
  static module from_spec(std::string_view json) {
    module m;
    detail::check(mmckpt_module_from_spec(json.data(), json.size(), &m.handle_));
    return m;
  }
  /// A meta module mirroring a checkpoint's tensor table.
  static module from_checkpoint(const checkpoint &ckpt) {
    if (!ckpt) throw error(MMCKPT_ERR_STATE, "mmckpt::checkpoint holds no checkpoint (moved from)");
    module m;
    detail::check(mmckpt_module_from_checkpoint(ckpt.get(), &m.handle_));
    return m;
  }

  module(const module &) = delete;
  module &operator=(const module &) = delete;
  module(module &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  module &operator=(module &&other) noexcept {
    if (this != &other) {
      mmckpt_module_free(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~module() { mmckpt_module_free(handle_); }

  /// The C handle (still owned by this object).
  mmckpt_module *get() const { return handle_; }
  explicit operator bool() const { return handle_ != nullptr; }

  /// Adds a meta entry (flags: MMCKPT_ENTRY_BUFFER, MMCKPT_ENTRY_NON_PERSISTENT).
  void add(std::string_view name, mmckpt_dtype dtype, const std::vector<int64_t> &shape,
           uint32_t flags = 0) {
    detail::check(mmckpt_module_add(live(), std::string(name).c_str(), dtype,
                                    shape.empty() ? nullptr : shape.data(),
                                    static_cast<uint32_t>(shape.size()), flags));
  }

  size_t size() const { return mmckpt_module_count(live()); }
  tensor at(size_t index) const {
    mmckpt_tensor t;
    detail::check(mmckpt_module_at(live(), index, &t));
    return tensor(t);
  }
  /// The entry with this name; throws MMCKPT_ERR_NOT_FOUND if none.
  tensor get(std::string_view name) const {
    mmckpt_tensor t;
    detail::check(mmckpt_module_get(live(), std::string(name).c_str(), &t));
    return tensor(t);
  }
  /// The entry with this name, or nullopt if none.
  std::optional<tensor> find(std::string_view name) const {
    mmckpt_tensor t;
    const mmckpt_status status = mmckpt_module_get(live(), std::string(name).c_str(), &t);
    if (status == MMCKPT_ERR_NOT_FOUND) return std::nullopt;
    detail::check(status);
    return tensor(t);
  }

  using iterator = detail::index_iterator<module, tensor, &module::get_entry>;
  iterator begin() const { return iterator(this, 0); }
  iterator end() const { return iterator(this, size()); }

  /// Gives every entry without data zeroed, module-owned storage (torch's to_empty()).
  void materialize() { detail::check(mmckpt_module_materialize(live())); }

  /// Binds caller memory (at least numel × itemsize bytes, kept valid and unused by others
  /// while bound) as the entry's contiguous storage.
  void bind(std::string_view name, void *data, size_t nbytes) {
    detail::check(mmckpt_module_bind(live(), std::string(name).c_str(), data, nbytes));
  }
  /// Binds a vector; its element type must be the entry's dtype.
  template <class T>
  void bind(std::string_view name, std::vector<T> &storage) {
    const tensor entry = get(name);
    if (entry.dtype() != dtype_of<T>::value) {
      throw error(MMCKPT_ERR_DTYPE_MISMATCH,
                  "entry " + detail::quoted(name) + " is " + std::string(entry.dtype_name()) +
                      ", not " + std::string(dtype_name(dtype_of<T>::value)));
    }
    bind(name, storage.data(), storage.size() * sizeof(T));
  }

  /// Loads a checkpoint, as load_state_dict does. Failures throw mmckpt::error (a strict
  /// load's key and size mismatches in torch's wording); an exception thrown by the
  /// on_tensor callable is rethrown as it was.
  load_report load(const checkpoint &ckpt, const load_options &opts = load_options()) {
    if (!ckpt) throw error(MMCKPT_ERR_STATE, "mmckpt::checkpoint holds no checkpoint (moved from)");
    mmckpt_load_options c = detail::default_load_options();
    c.flags |= opts.set_;
    c.flags &= ~opts.cleared_;
    c.prefix = opts.prefix_ ? opts.prefix_->c_str() : nullptr;
    callback_state state{opts.callable_.get(), opts.invoke_, nullptr};
    if (opts.invoke_) {
      c.on_tensor = &trampoline;
      c.user_data = &state;
    }
    mmckpt_load_report *report = nullptr;
    const mmckpt_status status = mmckpt_module_load(live(), ckpt.get(), &c, &report);
    if (state.thrown) std::rethrow_exception(state.thrown);
    detail::check(status);
    return load_report(report);
  }

 private:
  struct callback_state {
    void *callable;
    bool (*invoke)(void *, const tensor &);
    std::exception_ptr thrown;
  };

  // Never unwinds into mmckpt: an exception is kept and rethrown after the load returns.
  static int32_t trampoline(void *user_data, const mmckpt_tensor *entry) noexcept {
    auto *state = static_cast<callback_state *>(user_data);
    try {
      return state->invoke(state->callable, tensor(*entry)) ? 0 : 1;
    } catch (...) {
      state->thrown = std::current_exception();
      return 1;
    }
  }

  mmckpt_module *live() const {
    if (!handle_) throw error(MMCKPT_ERR_STATE, "mmckpt::module holds no module (moved from)");
    return handle_;
  }

  mmckpt_module *handle_ = nullptr;
};

}  // namespace mmckpt

#endif  // MMCKPT_HPP
