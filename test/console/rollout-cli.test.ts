/**
 * `esp-ota rollout retry-failed` and `rollout next-wave` (docs/rollouts.md): the same inputs the
 * console's buttons send. next-wave goes to the process that owns the rollout (here the console,
 * over the control topic); retry-failed on a finished rollout nobody owns is applied by the CLI,
 * which then runs the rollout until it ends.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCapture } from "../helpers/cli.js";
import { startWorld, type World } from "./world.js";

describe("rollout retry-failed / next-wave", () => {
  let w: World;
  let headers: Record<string, string>;
  beforeAll(async () => {
    w = await startWorld({
      d1: [
        { final: "failed", code: "E_DOWNLOAD_FAILED" },
        { final: "succeeded", hold: "queued" },
      ],
      d2: [{ final: "succeeded" }],
      d3: [{ final: "succeeded", hold: "queued" }],
    });
    const r = await fetch(`${w.url}/api/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "olga", password: "olga-pass" }),
    });
    const csrf = ((await r.json()) as { csrf: string }).csrf;
    headers = {
      "content-type": "application/json",
      cookie: r.headers.get("set-cookie")!.split(";")[0]!,
      "x-csrf-token": csrf,
    };
  });
  afterAll(async () => {
    await w?.close();
  });

  const start = async (body: object) => {
    const r = await fetch(`${w.url}/api/rollouts`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
    });
    expect(r.status).toBe(200);
  };
  const until = async (f: () => boolean) => {
    for (let i = 0; i < 500 && !f(); i++) await new Promise((res) => setTimeout(res, 10));
  };
  const broker = () => ["--broker", w.brokerUrl, "--mqtt-version", "4"];

  it("retry-failed re-runs only the failed device and the CLI runs the rollout to its end", async () => {
    await start({
      release: w.releaseDir,
      waves: "50,100",
      maxFailureRate: "100",
      id: "r2",
      devices: ["d1", "d2"],
    });
    await until(() => w.server.model.rollouts.get("r2")?.state === "completed");
    expect(w.server.model.rollouts.get("r2")?.perDevice.d1?.state).toBe("failed");
    const run = runCapture(["rollout", "retry-failed", "r2", ...broker()]);
    await until(() => w.gateway.isHeld("d1"));
    w.gateway.go("d1");
    const r = await run;
    expect(r.stderr).toContain("retrying 1 failed device(s) (d1)");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("completed");
    const again = await runCapture(["rollout", "retry-failed", "r2", ...broker()]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("E_ROLLOUT_NOT_APPLICABLE");
  });

  it("next-wave is sent to the owning process, which starts the next wave at once", async () => {
    await start({ release: w.releaseDir, waves: "50,100", id: "r3", devices: ["d3", "d2"] });
    await until(() => w.gateway.isHeld("d3"));
    const r = await runCapture(["rollout", "next-wave", "r3", ...broker()]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("rollout r3: running, wave 2/2");
    expect(w.log).toContain("rollout r3: wave 2 started by the operator");
    w.gateway.go("d3");
    await until(() => w.server.model.rollouts.get("r3")?.state === "completed");
    expect(w.server.model.rollouts.get("r3")?.state).toBe("completed");
    const late = await runCapture(["rollout", "next-wave", "r3", ...broker()]);
    expect(late.code).toBe(1);
    expect(late.stderr).toContain("the rollout already completed");
  });
});
