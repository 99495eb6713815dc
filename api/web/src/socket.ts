/**
 * The one events-mode `/ws/chat` socket of the page, kept open across questions.
 *
 * A lost connection is retried with exponential backoff (0.5 s doubling to 10 s); listeners
 * hear every state change so the page can tell the user, and an answer that was streaming
 * when the socket dropped is ended by the caller (the server cancels it on disconnect).
 */
import { apiKey } from "./api";
import type { ChatEvent } from "./types";

export type SocketState = "connecting" | "open" | "reconnecting";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const PING_EVERY_MS = 25_000;

export interface SocketListener {
  onEvent(event: ChatEvent): void;
  onState(state: SocketState, retryInMs?: number): void;
  onLost(): void;
}

export class ChatSocket {
  private socket: WebSocket | null = null;
  private delay = FIRST_DELAY_MS;
  private retryTimer: number | undefined;
  private pingTimer: number | undefined;

  constructor(private readonly listener: SocketListener) {}

  get isOpen(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  connect(): void {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const key = apiKey();
    const auth = key ? `&api_key=${encodeURIComponent(key)}` : "";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/chat?protocol=events${auth}`);
    this.socket = socket;
    this.listener.onState("connecting");
    socket.onopen = () => {
      this.delay = FIRST_DELAY_MS;
      this.listener.onState("open");
      this.pingTimer = window.setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
    };
    socket.onmessage = (message) => this.listener.onEvent(JSON.parse(String(message.data)) as ChatEvent);
    socket.onclose = () => {
      window.clearInterval(this.pingTimer);
      if (this.socket !== socket) return;
      this.listener.onLost();
      this.listener.onState("reconnecting", this.delay);
      this.retryTimer = window.setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    };
  }

  /** Retry at once (the user clicked "reconnect now"). */
  reconnectNow(): void {
    window.clearTimeout(this.retryTimer);
    if (!this.isOpen) this.connect();
  }

  send(frame: object): boolean {
    if (!this.isOpen) return false;
    this.socket!.send(JSON.stringify(frame));
    return true;
  }
}
