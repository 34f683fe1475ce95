// load.cpp: builds a module from its spec, loads a checkpoint into it row-major, and prints it.
#include <fstream>
#include <iostream>
#include <sstream>

#include <mmckpt.hpp>

int main(int argc, char **argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " CHECKPOINT SPEC.json\n";
    return 2;
  }
  try {
    std::ostringstream spec;
    spec << std::ifstream(argv[2]).rdbuf();
    mmckpt::checkpoint ckpt(argv[1]);  // mapped; reads metadata only
    mmckpt::module net = mmckpt::module::from_spec(spec.str());  // names, shapes, dtypes; no data
    // Views into the file; strided weights copied row-major; float16 converted to the spec's dtype.
    mmckpt::load_report report = net.load(ckpt, mmckpt::load_options().assign().contiguous().convert());
    for (const mmckpt::tensor &t : net) {
      std::cout << t.name() << ' ' << t.dtype_name() << " [";
      for (size_t d = 0; d < t.shape().size(); d++) std::cout << (d ? ", " : "") << t.shape()[d];
      std::cout << "] " << (t.is_mapped() ? "view" : "copied");
      if (t.dtype() == MMCKPT_DTYPE_FLOAT32 && t.numel() > 0)
        std::cout << " first " << t.data<float>()[0];  // checked: float32 and row-major
      std::cout << '\n';
    }
    std::cout << report.message() << '\n';
  } catch (const mmckpt::error &e) {  // status and message: what was wrong, and where
    std::cerr << e.status_text() << ": " << e.what() << '\n';
    return 1;
  }
  return 0;
}
