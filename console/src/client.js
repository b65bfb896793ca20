// The Assistant client over grpc-web, and errors in plain words.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AssistantService } from "./gen/quarry/v1/assistant_pb.js";
import { RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

const TOKEN_KEY = "quarry.token";

// The token lives in sessionStorage (this tab, until it closes), never in
// the URL or a cookie.
export const tokenStore = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// A client whose every call carries `authorization: Bearer <token>`.
export function assistantClient() {
  const transport = createGrpcWebTransport({
    baseUrl: window.location.origin,
    useBinaryFormat: true,
    interceptors: [
      (next) => async (req) => {
        const token = tokenStore.get();
        if (token) req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      },
    ],
  });
  return createClient(AssistantService, transport);
}

function seconds(duration) {
  if (!duration) return undefined;
  return Number(duration.seconds) + duration.nanos / 1e9;
}

// { title, detail, signOut } for an error of a call.
export function plainError(error) {
  const err = ConnectError.from(error);
  const message = err.rawMessage || "";
  switch (err.code) {
    case Code.Unauthenticated:
      return {
        title: /expired/i.test(message)
          ? "Your token has expired. Sign in again with a fresh token."
          : "The server did not accept your token. Sign in again with a valid token.",
        detail: message,
        signOut: true,
      };
    case Code.PermissionDenied:
      return {
        title: "Permission denied: your token does not allow this.",
        detail: message,
      };
    case Code.ResourceExhausted: {
      const [retry] = err.findDetails(RetryInfoSchema);
      const wait = seconds(retry?.retryDelay);
      const when =
        wait === undefined ? "Try again later." : `Wait ${Math.max(1, Math.ceil(wait))} s and try again.`;
      return { title: `Too many requests or over budget. ${when}`, detail: message };
    }
    case Code.InvalidArgument:
      return { title: "The server could not accept this request.", detail: message };
    case Code.NotFound:
      return { title: "Not found: it may have been deleted or may belong to someone else.", detail: message };
    case Code.Unavailable:
      return { title: "The server is unavailable right now. Try again in a moment.", detail: message };
    case Code.DeadlineExceeded:
      return { title: "The server took too long to answer.", detail: message };
    case Code.Canceled:
      return { title: "Stopped.", detail: "" };
    default:
      return { title: `Something went wrong (${Code[err.code] ?? err.code}).`, detail: message };
  }
}
