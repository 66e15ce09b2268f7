#ifndef C_RUNTIME_TUNING_H
#define C_RUNTIME_TUNING_H

#include <stdbool.h>

/// Switches off the Swift runtime's dynamic exclusivity checks (swift_beginAccess / swift_endAccess) for the whole
/// process, including the code of dependencies, which the package cannot compile with
/// `-enforce-exclusivity=unchecked` (its own modules are, in release builds). Call once, before other threads start.
void ao_disable_dynamic_exclusivity_checks(void);

/// Whether the runtime's dynamic exclusivity checks are on.
bool ao_dynamic_exclusivity_checks_enabled(void);

#endif
