// A worked engine: a small network made and saved by torch (a conv net with an MLP head; see
// scripts/make_engine_fixture.py) is loaded through mmckpt.hpp with assign — its weights stay
// views into the mapped file — and run forward in plain C++. Its outputs are compared with the
// outputs torch computed, which the fixture stores as a checkpoint too (read through mmckpt).
//
//   engine [DIR]    DIR holds net.pt, net.spec.json and reference.pt
//                   (default: tests/fixtures/engine); exit status 0 when every output is
//                   within 1e-5 of torch's.
//
// The weights are read at the strides torch saved them with (strided<float>()): a channels_last
// conv weight and a transposed linear weight are used in place, without a copy.
#include "mmckpt.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

// An activation: row-major values and their shape.
struct activation {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// torch.nn.Linear on [N, in]: y = x Wᵀ + b.
activation linear(const activation &x, const mmckpt::module &net, const std::string &layer) {
  const auto w = net.get(layer + ".weight").strided<float>();  // [out, in], any strides
  const float *b = net.get(layer + ".bias").data<float>();
  const int64_t batch = x.shape[0], in = w.size(1), out = w.size(0);
  activation y{{batch, out}, std::vector<float>(static_cast<size_t>(batch * out))};
  for (int64_t n = 0; n < batch; n++) {
    for (int64_t o = 0; o < out; o++) {
      float acc = b[o];
      for (int64_t i = 0; i < in; i++) acc += x.values[n * in + i] * w(o, i);
      y.values[n * out + o] = acc;
    }
  }
  return y;
}

// torch.nn.Conv2d on [N, C, H, W], stride 1, zero padding `pad`.
activation conv2d(const activation &x, const mmckpt::module &net, const std::string &layer, int64_t pad) {
  const auto w = net.get(layer + ".weight").strided<float>();  // [O, C, K, K], any strides
  const float *b = net.get(layer + ".bias").data<float>();
  const int64_t batch = x.shape[0], channels = x.shape[1], h = x.shape[2], wd = x.shape[3];
  const int64_t out_channels = w.size(0), k = w.size(2);
  const int64_t oh = h + 2 * pad - k + 1, ow = wd + 2 * pad - k + 1;
  activation y{{batch, out_channels, oh, ow}, std::vector<float>(static_cast<size_t>(batch * out_channels * oh * ow))};
  for (int64_t n = 0; n < batch; n++)
    for (int64_t o = 0; o < out_channels; o++)
      for (int64_t r = 0; r < oh; r++)
        for (int64_t c = 0; c < ow; c++) {
          float acc = b[o];
          for (int64_t ci = 0; ci < channels; ci++)
            for (int64_t kr = 0; kr < k; kr++)
              for (int64_t kc = 0; kc < k; kc++) {
                const int64_t ir = r + kr - pad, ic = c + kc - pad;
                if (ir < 0 || ir >= h || ic < 0 || ic >= wd) continue;
                acc += x.values[((n * channels + ci) * h + ir) * wd + ic] * w(o, ci, kr, kc);
              }
          y.values[((n * out_channels + o) * oh + r) * ow + c] = acc;
        }
  return y;
}

// torch.nn.BatchNorm2d in eval mode: the running statistics.
activation batch_norm2d(activation x, const mmckpt::module &net, const std::string &layer) {
  const float *weight = net.get(layer + ".weight").data<float>();
  const float *bias = net.get(layer + ".bias").data<float>();
  const float *mean = net.get(layer + ".running_mean").data<float>();
  const float *var = net.get(layer + ".running_var").data<float>();
  const float eps = 1e-5f;
  const int64_t channels = x.shape[1], plane = x.shape[2] * x.shape[3];
  for (size_t i = 0; i < x.values.size(); i++) {
    const int64_t c = (static_cast<int64_t>(i) / plane) % channels;
    x.values[i] = (x.values[i] - mean[c]) / std::sqrt(var[c] + eps) * weight[c] + bias[c];
  }
  return x;
}

activation relu(activation x) {
  for (float &v : x.values) v = std::max(v, 0.0f);
  return x;
}

// torch.nn.MaxPool2d(2).
activation max_pool2d(const activation &x) {
  const int64_t nc = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3];
  activation y{{x.shape[0], x.shape[1], h / 2, w / 2}, {}};
  for (int64_t p = 0; p < nc; p++)
    for (int64_t r = 0; r < h / 2; r++)
      for (int64_t c = 0; c < w / 2; c++) {
        const float *top = &x.values[(p * h + 2 * r) * w + 2 * c];
        y.values.push_back(std::max({top[0], top[1], top[w], top[w + 1]}));
      }
  return y;
}

activation flatten(activation x) {
  x.shape = {x.shape[0], static_cast<int64_t>(x.values.size()) / x.shape[0]};
  return x;
}

// Net.features, then Net.classifier (scripts/make_engine_fixture.py).
activation features(const mmckpt::module &net, const activation &x) {
  activation h = max_pool2d(relu(batch_norm2d(conv2d(x, net, "features.0", 1), net, "features.1")));
  return flatten(max_pool2d(relu(conv2d(h, net, "features.4", 1))));
}

activation classifier(const mmckpt::module &net, const activation &x) {
  return linear(relu(linear(x, net, "classifier.1")), net, "classifier.3");
}

std::string read_text(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

float max_abs_diff(const activation &mine, const mmckpt::tensor &torchs) {
  const std::vector<float> expected = torchs.to_vector<float>();
  if (mine.shape != torchs.shape().to_vector() || mine.values.size() != expected.size())
    throw std::runtime_error("output '" + std::string(torchs.name()) + "' has another shape than torch's");
  float worst = 0;
  for (size_t i = 0; i < expected.size(); i++) {
    const float diff = std::fabs(mine.values[i] - expected[i]);
    if (!(diff <= worst)) worst = diff;  // NaN propagates
  }
  return worst;
}

int run(const std::string &dir) {
  // Open the checkpoint (mapped, nothing read yet), build the module from its spec, and
  // assign-load: every float32 weight becomes a view into the file; convert() turns the one
  // float16 weight into float32 owned by the module, as the module declares it.
  mmckpt::checkpoint ckpt(dir + "/net.pt");
  mmckpt::module net = mmckpt::module::from_spec(read_text(dir + "/net.spec.json"));
  const mmckpt::load_report report = net.load(ckpt, mmckpt::load_options().assign().convert());
  std::printf("load: %s\n", std::string(report.message()).c_str());
  for (const mmckpt::tensor &t : net) {
    std::printf("  %-32s %-8s %s%s\n", std::string(t.name()).c_str(), std::string(t.dtype_name()).c_str(),
                t.is_mapped() ? "zero-copy" : "converted", t.is_contiguous() ? "" : ", strided");
  }

  mmckpt::checkpoint reference(dir + "/reference.pt");
  const mmckpt::tensor input = reference.tensor("input");
  const activation x{input.shape().to_vector(), input.to_vector<float>()};
  const activation f = features(net, x);
  const activation y = classifier(net, f);
  const float feature_diff = max_abs_diff(f, reference.tensor("features"));
  const float output_diff = max_abs_diff(y, reference.tensor("output"));
  std::printf("max abs diff against torch: features %.3g, output %.3g\n", feature_diff, output_diff);

  // The fixture is what it claims to be: strided weights used in place, one converted.
  const bool layouts = !net.get("features.4.weight").is_contiguous() && net.get("features.4.weight").is_mapped() &&
                       !net.get("classifier.1.weight").is_contiguous() &&
                       net.get("classifier.1.weight").is_mapped() && !net.get("classifier.3.weight").is_mapped() &&
                       net.get("classifier.3.weight").dtype() == MMCKPT_DTYPE_FLOAT32;
  if (!layouts) std::fprintf(stderr, "engine: the fixture's weights are not laid out as expected\n");
  return layouts && feature_diff < 1e-5f && output_diff < 1e-5f ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  try {
    return run(argc > 1 ? argv[1] : "tests/fixtures/engine");
  } catch (const mmckpt::error &e) {
    std::fprintf(stderr, "engine: %s: %s\n", e.status_text(), e.what());
  } catch (const std::exception &e) {
    std::fprintf(stderr, "engine: %s\n", e.what());
  }
  return 1;
}
