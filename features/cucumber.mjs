// cucumber-js configuration: the features at the top of features/, the
// World and the SSE client in support/, the steps in step_definitions/.
// test/suites/35-features (make features) runs it against a local stack;
// NADI_EDGE_URL names the edge, NADI_SRC the checkout whose scripts/nadi-local
// mints tokens.  Undefined or pending steps fail the run (strict).
const common = {
  import: ["support/**/*.mjs", "step_definitions/**/*.mjs"],
  format: ["progress"],
  strict: true,
};

export default { ...common, paths: ["*.feature"] };

// --profile selfcheck: the wrong expectations that must fail
export const selfcheck = { ...common, paths: ["selfcheck/*.feature"] };
