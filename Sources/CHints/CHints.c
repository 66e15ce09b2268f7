// CHints is header-only (static inline functions, see include/CHints.h); a C target needs one source file.
#include "CHints.h"
