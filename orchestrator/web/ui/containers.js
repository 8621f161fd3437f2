//! placeholder
export function render(ctx) {}
