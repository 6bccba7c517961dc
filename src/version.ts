/** The package version, reported by `esp-ota --version` and in the gateway's presence message. */
export const VERSION = "0.1.0";
