// Runs a wasm32-wasip1 binary (a libtest test binary built by
// `cargo test --target wasm32-wasip1`) under Node's built-in WASI
// (preview1), as cargo's target runner (.cargo/config.toml):
//
//     node tests/support/wasi-runner.mjs path/to/test.wasm [libtest args...]
//
// - argv: the program name plus every argument cargo passes on, so libtest
//   filters (`cargo test --target wasm32-wasip1 --tests -- name_filter`),
//   `--list`, `--exact`, `--ignored`, `--nocapture` work;
// - env: the process environment (cargo's CARGO_MANIFEST_DIR, RUST_BACKTRACE,
//   ...);
// - files: the current directory (cargo runs tests from the package root)
//   is preopened both as `.` and under its absolute path, and so is
//   CARGO_MANIFEST_DIR, so `env!("CARGO_MANIFEST_DIR")` paths and relative
//   paths both work. Nothing else of the file system is visible;
// - exit code: the wasm program's own (libtest: 0 passed, 101 failed). A
//   trap exits 134, like an abort;
// - other imports: the crate's own unit-test binary links the proxy-wasm
//   adapter, which imports the proxy-wasm ABI (`env.proxy_*`). Tests never
//   call the host, so every function import that WASI does not provide is a
//   stub that throws with its name if it is ever called.
//
// wasm32-wasip1 aborts on panic, so a failing test kills the whole binary
// and libtest's captured output (the assertion message) is lost. When that
// happens and `--nocapture` was not given, the runner runs the binary once
// more with `--nocapture` so the panic message is printed; the exit code is
// still the failure.
//
// node:wasi prints an ExperimentalWarning when loaded; it is filtered out
// here (before the dynamic import) instead of with --no-warnings, so the
// runner line in .cargo/config.toml stays `node <script>`.

const originalEmit = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type;
  if (type === 'ExperimentalWarning' || warning?.name === 'ExperimentalWarning') return;
  return originalEmit.call(process, warning, ...rest);
};

const { readFile } = await import('node:fs/promises');
const path = await import('node:path');
const { WASI } = await import('node:wasi');

const [wasmPath, ...args] = process.argv.slice(2);
if (!wasmPath) {
  process.stderr.write('usage: node tests/support/wasi-runner.mjs <program.wasm> [args...]\n');
  process.exit(2);
}

const preopens = { '.': process.cwd(), [process.cwd()]: process.cwd() };
const manifestDir = process.env.CARGO_MANIFEST_DIR;
if (manifestDir) preopens[path.resolve(manifestDir)] = path.resolve(manifestDir);

const module = await WebAssembly.compile(await readFile(wasmPath));

async function run(argv) {
  const wasi = new WASI({
    version: 'preview1',
    args: [path.basename(wasmPath), ...argv],
    env: process.env,
    preopens,
    returnOnExit: true,
  });
  const imports = wasi.getImportObject();
  for (const imp of WebAssembly.Module.imports(module)) {
    imports[imp.module] ??= {};
    if (imp.kind === 'function' && !(imp.name in imports[imp.module])) {
      imports[imp.module][imp.name] = () => {
        throw new Error(`host function ${imp.module}.${imp.name} is not available in tests`);
      };
    }
  }
  try {
    const instance = await WebAssembly.instantiate(module, imports);
    // A test binary is a WASI command (`_start`). The crate's own unit-test
    // binary also carries proxy-wasm's `_initialize` (the plugin's entry
    // point, which talks to the host); node:wasi refuses a module with both,
    // and the tests must not run it, so it is hidden.
    let target = instance;
    if ('_start' in instance.exports && '_initialize' in instance.exports) {
      const { _initialize, ...exports } = instance.exports;
      target = { exports };
    }
    return wasi.start(target) ?? 0;
  } catch (e) {
    // A trap: `unreachable` from an abort (a panic), or a failed instantiation.
    process.stderr.write(`wasi-runner: ${path.basename(wasmPath)}: ${e?.message ?? e}\n`);
    return 134;
  }
}

let code = await run(args);
const listing = args.includes('--list');
if (code === 134 && !listing && !args.includes('--nocapture') && !args.includes('--no-capture')) {
  process.stderr.write('wasi-runner: a test panicked; wasm aborts on panic, so its output was lost. ' +
    'Running again with --nocapture to show it:\n');
  await run([...args, '--nocapture']);
}
process.exitCode = code;
