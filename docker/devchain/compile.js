#!/usr/bin/env node
// Compile Nevermined contracts offline with solc-js (standard JSON + import callback).
//
//   node compile.js OUT.json ContractName [ContractName ...]
//
// Writes {"solc": version, "contracts": {Name: {"abi": [...], "bytecode": "0x..."}}} to OUT.json.
// Imports ('@openzeppelin/...', 'hardhat/console.sol', relative ones) resolve under ./node_modules.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const MODULES = path.join(__dirname, 'node_modules');
const NEVERMINED_LIB = '@nevermined-io/contracts/lib';

function findSource(name) {
  const stack = [path.join(MODULES, NEVERMINED_LIB)];
  while (stack.length) {
    const dir = stack.pop();
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory() && entry.name !== 'test') stack.push(full);
      else if (entry.name === `${name}.sol`) return path.relative(MODULES, full).split(path.sep).join('/');
    }
  }
  throw new Error(`no source file ${name}.sol under ${NEVERMINED_LIB}`);
}

function readImport(importPath) {
  const full = path.resolve(MODULES, importPath);
  if (!full.startsWith(MODULES + path.sep)) return { error: `import outside node_modules: ${importPath}` };
  try {
    return { contents: fs.readFileSync(full, 'utf8') };
  } catch (err) {
    return { error: `cannot read ${importPath}: ${err.message}` };
  }
}

function main() {
  const [out, ...names] = process.argv.slice(2);
  if (!out || names.length === 0) {
    console.error('usage: node compile.js OUT.json ContractName [ContractName ...]');
    process.exit(2);
  }
  const units = Object.fromEntries(names.map((name) => [name, findSource(name)]));
  const input = {
    language: 'Solidity',
    sources: Object.fromEntries(
      Object.values(units).map((unit) => [unit, { content: fs.readFileSync(path.join(MODULES, unit), 'utf8') }]),
    ),
    settings: {
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: readImport }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage);
    process.exit(1);
  }
  const contracts = {};
  for (const [name, unit] of Object.entries(units)) {
    const compiled = output.contracts[unit] && output.contracts[unit][name];
    if (!compiled) throw new Error(`${name} not found in ${unit}`);
    const bytecode = compiled.evm.bytecode.object;
    if (bytecode.includes('__$')) throw new Error(`${name} has unlinked library references`);
    contracts[name] = { abi: compiled.abi, bytecode: `0x${bytecode}` };
  }
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ solc: solc.version(), contracts }));
}

main();
