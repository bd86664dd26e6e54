// The socket.io API suite through useRoomcast: two app instances serve a 3-node hub (the
// real binary, ROOMCAST_BIN_DIR), clients spread over the nodes. The assertions are the
// standalone run's (api-standalone.test.mjs).
import { before, after } from "node:test";
import { apiSuite } from "./support/api-suite.mjs";
import { hubEnv, socketIo, startHub } from "./support/env.mjs";

const IPS = ["127.0.0.31", "127.0.0.32", "127.0.0.33"];
let hub = null;
before(async () => {
  hub = await startHub({ ips: IPS });
});
after(async () => {
  for (const node of hub?.nodes ?? []) node.assertHealthy("after the API suite");
  await hub?.stop();
});

apiSuite(hubEnv(await socketIo(), () => hub, { instances: 2 }));
