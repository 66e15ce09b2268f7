#ifndef C_SHA256_H
#define C_SHA256_H

#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has the SHA extensions (and the SSSE3/SSE4.1 that the routine below also uses). x86-64 only;
/// elsewhere always 0.
int ao_sha256_hardware_available(void);

/// SHA-256 compression of `blocks` 64-byte blocks at `data` into `state` (the eight working words, FIPS 180-4 order),
/// with the x86 SHA instructions. Call only when `ao_sha256_hardware_available()` is 1.
void ao_sha256_hardware_blocks(uint32_t state[8], const uint8_t *data, size_t blocks);

/// The 64 round constants of SHA-256.
const uint32_t *ao_sha256_round_constants(void);

#endif
