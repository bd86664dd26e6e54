// The socket.io API suite against a plain standalone socket.io Server (the reference the hub
// run must match). ROOMCAST_SIO picks the socket.io version (run.sh runs each).
import { apiSuite } from "./support/api-suite.mjs";
import { socketIo, standaloneEnv } from "./support/env.mjs";

apiSuite(standaloneEnv(await socketIo()));
