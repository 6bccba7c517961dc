/**
 * A rehearsal: the plan's own script replayed against a factory-fresh simulated chip, gates and
 * all (`esp-ota provision rehearse`). The gates are what check each step's eFuse state: a gate
 * that fails stops the replay as `set -e` stops the real script.
 */
import type { ProvisionPlan } from "./plan.js";
import { freshDevice, type ReplayFiles, type ReplayReport, replayScript } from "./replay.js";
import { renderScript } from "./script.js";

export interface RehearsalOptions {
  files: ReplayFiles;
  flashSize?: number;
  mac?: Uint8Array;
  signingKeyPem?: (scheme: string) => string;
}

export function rehearse(
  plan: ProvisionPlan,
  opts: RehearsalOptions,
): { script: string; report: ReplayReport; gates: number } {
  if (plan.chip !== "esp32" && plan.chip !== "esp32s3")
    throw new RangeError(`rehearse: the simulator models esp32 and esp32s3, not ${plan.chip}`);
  const script = renderScript(plan);
  const device = freshDevice(plan.chip, opts.flashSize ?? 4 << 20, opts.mac);
  device.spec.partitionTableOffset = plan.partitionTableOffset;
  const report = replayScript(script, {
    device,
    files: opts.files,
    sdkconfig: {
      partitionTableOffset: plan.partitionTableOffset,
      secureBoot: plan.secureBoot,
      flashEncryption: plan.flashEncryption,
    },
    ...(opts.signingKeyPem ? { signingKeyPem: opts.signingKeyPem } : {}),
  });
  const gates = report.steps.filter(
    (s) => / provision check-state .*efuse-.*\.json$/.test(s.text) && s.result === "ok",
  ).length;
  return { script, report, gates };
}
