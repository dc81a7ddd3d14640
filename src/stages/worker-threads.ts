// Options every worker-thread pool of Blanket starts its threads with.

/**
 * Node arguments for pool threads: this process's own, plus require(esm) turned off where Node has it. Piscina
 * loads a task module with require() before trying import(), and on Node 20.19+ a require() of an ES module can
 * race with the module loader and abort the whole process (V8: "Module::IsGraphAsync must be used on an
 * instantiated module", which this project's CLI tests met twice). Without require(esm), require() fails at
 * once and Piscina imports the module, as on earlier Node versions.
 */
export function poolExecArgv(): string[] {
  const flag = '--no-experimental-require-module';
  return process.allowedNodeEnvironmentFlags.has(flag) && !process.execArgv.includes(flag) ? [...process.execArgv, flag] : [...process.execArgv];
}
