#ifndef C_HINTS_H
#define C_HINTS_H

/// Asks the memory system for the cache line holding `p` (for reading, to be kept in all cache levels) without
/// waiting for it: the load that needs it later finds it on its way or there. Only a hint: never faults, changes no
/// result.
static inline __attribute__((always_inline)) void ao_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

#endif
