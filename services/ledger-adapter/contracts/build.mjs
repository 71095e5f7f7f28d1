// Compiles ProsumLedger.sol offline with the npm `solc` package (standard-JSON interface, the
// only way to pick the EVM version with it) and writes the artifact the Python backend loads.
//
//   node services/ledger-adapter/contracts/build.mjs          rebuild the committed artifact
//   node services/ledger-adapter/contracts/build.mjs --check  rebuild to a temp file, compare
//                                                             with the committed one, exit 1
//                                                             when they differ
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..", "..", "..");
const SOURCE_NAME = "ProsumLedger.sol";
const CONTRACT = "ProsumLedger";
const sourcePath = join(here, SOURCE_NAME);
const artifactPath = resolve(
  here,
  "..",
  "src",
  "prosum_ledger",
  "adapters",
  "evm",
  "artifacts",
  `${CONTRACT}.json`,
);

// Cancun runs on both anvil and py-evm (eth-tester); the optimizer is tuned for many calls
// of settleBatch rather than a small deployment.
const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 10000 },
  viaIR: true,
  outputSelection: { [SOURCE_NAME]: { [CONTRACT]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function compile() {
  // Resolved from the repository root, where package.json pins the compiler.
  const require = createRequire(join(repoRoot, "package.json"));
  const solc = require("solc");
  const source = readFileSync(sourcePath, "utf8");
  const input = { language: "Solidity", sources: { [SOURCE_NAME]: { content: source } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const problems = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const e of output.errors ?? []) process.stderr.write(`${e.formattedMessage}\n`);
  if (problems.length > 0) {
    process.stderr.write(`solc failed with ${problems.length} error(s)\n`);
    process.exit(2);
  }
  const contract = output.contracts[SOURCE_NAME][CONTRACT];
  const artifact = {
    contractName: CONTRACT,
    source: relative(repoRoot, sourcePath),
    sourceSha256: createHash("sha256").update(source, "utf8").digest("hex"),
    compiler: { name: "solc", version: solc.version() },
    settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer, viaIR: SETTINGS.viaIR },
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
  };
  return `${JSON.stringify(artifact, null, 2)}\n`;
}

function main() {
  const text = compile();
  if (process.argv.includes("--check")) {
    const dir = mkdtempSync(join(tmpdir(), "prosum-contracts-"));
    try {
      const fresh = join(dir, `${CONTRACT}.json`);
      writeFileSync(fresh, text);
      let committed = "";
      try {
        committed = readFileSync(artifactPath, "utf8");
      } catch {
        process.stderr.write(`missing artifact ${relative(repoRoot, artifactPath)}\n`);
        process.exit(1);
      }
      if (committed !== readFileSync(fresh, "utf8")) {
        process.stderr.write(
          `${relative(repoRoot, artifactPath)} does not match ${relative(repoRoot, sourcePath)}; ` +
            "run `npm run build:contracts` and commit the result\n",
        );
        process.exit(1);
      }
      process.stdout.write(`${relative(repoRoot, artifactPath)} matches its source\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return;
  }
  mkdirSync(dirname(artifactPath), { recursive: true });
  writeFileSync(artifactPath, text);
  process.stdout.write(`wrote ${relative(repoRoot, artifactPath)}\n`);
}

main();
