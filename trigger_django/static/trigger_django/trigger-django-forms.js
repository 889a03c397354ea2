/* Enhances {% approval_form %}; see docs/input-streams.md. */
