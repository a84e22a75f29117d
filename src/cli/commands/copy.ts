import type { Command } from "../main.js";
const cmd: Command = { usage: "", options: {}, async run() { return 1; } };
export default cmd;
