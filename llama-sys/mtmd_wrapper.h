// The C API of libmtmd (the `mtmd` feature): images and audio through a
// model's projector file, and its helpers (chunk evaluation, positions).
#include "mtmd.h"
#include "mtmd-helper.h"
