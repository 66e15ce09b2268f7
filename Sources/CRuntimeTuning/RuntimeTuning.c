#include "CRuntimeTuning.h"

// Defined (and exported) by the Swift runtime's Exclusivity.cpp, static or shared: when true, swift_beginAccess
// records the access as untracked and swift_endAccess returns at once.
extern bool _swift_disableExclusivityChecking;

void ao_disable_dynamic_exclusivity_checks(void) { _swift_disableExclusivityChecking = true; }

bool ao_dynamic_exclusivity_checks_enabled(void) { return !_swift_disableExclusivityChecking; }
