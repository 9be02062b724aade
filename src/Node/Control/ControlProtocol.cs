using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Potluck.Node.Control;

/// <summary>
/// The local control API's wire format: HTTP/1.1 on a loopback address, <c>POST /api/v1/&lt;method&gt;</c> with a JSON
/// object of parameters (or no body) and <c>Authorization: Bearer &lt;token&gt;</c>; every answer is one JSON object:
/// <code>
/// ← {"ok":true,"result":{...}}
/// ← {"ok":false,"error":{"code":"unknown_method","message":"..."}}
/// </code>
/// with the HTTP status matching the error (400, 401, 404, 413, 503, 500). Requests are bounded (<see cref="ControlOptions"/>).
/// <c>GET /metrics</c> (same token) answers in the Prometheus text format.
/// </summary>
public static class ControlProtocol
{
    /// <summary>The path prefix of methods.</summary>
    public const string ApiPrefix = "/api/v1/";

    internal static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 32 };
}

/// <summary>Why a control request failed; sent as its snake_case name.</summary>
public enum ControlErrorCode
{
    /// <summary>The line is not a JSON object with a string "method", or its params are wrong for the method.</summary>
    BadRequest,
    /// <summary>No such method.</summary>
    UnknownMethod,
    /// <summary>The request line is longer than the node accepts; the connection is closed.</summary>
    LineTooLong,
    /// <summary>Too many control clients at once.</summary>
    Busy,
    /// <summary>The node could not do it right now (e.g. it is shutting down).</summary>
    Unavailable,
    /// <summary>A bug in the node: see its log.</summary>
    Internal,
    /// <summary>The token is missing or wrong.</summary>
    Unauthorized,
}

/// <summary>A typed control error: thrown by handlers to answer with an error, and by the client when one comes back.</summary>
public sealed class ControlException : Exception
{
    public ControlException(ControlErrorCode code, string message) : base(message) => Code = code;

    public ControlErrorCode Code { get; }

    public static string ToWire(ControlErrorCode code) => code switch
    {
        ControlErrorCode.BadRequest => "bad_request",
        ControlErrorCode.UnknownMethod => "unknown_method",
        ControlErrorCode.LineTooLong => "line_too_long",
        ControlErrorCode.Busy => "busy",
        ControlErrorCode.Unavailable => "unavailable",
        ControlErrorCode.Unauthorized => "unauthorized",
        _ => "internal",
    };

    public static ControlErrorCode FromWire(string? code) => code switch
    {
        "bad_request" => ControlErrorCode.BadRequest,
        "unknown_method" => ControlErrorCode.UnknownMethod,
        "line_too_long" => ControlErrorCode.LineTooLong,
        "busy" => ControlErrorCode.Busy,
        "unavailable" => ControlErrorCode.Unavailable,
        "unauthorized" => ControlErrorCode.Unauthorized,
        _ => ControlErrorCode.Internal,
    };
}

/// <summary>No node answers on the data directory's control socket.</summary>
public sealed class NodeNotRunningException : IOException
{
    public NodeNotRunningException(string dataDir)
        : base($"no node is running with data dir {dataDir}; start one with potluck run (or give its --data-dir)") => DataDir = dataDir;

    public string DataDir { get; }
}

/// <summary>Where the control API listens, and its limits.</summary>
public sealed class ControlOptions
{
    /// <summary>The loopback address and port. Default 127.0.0.1:4101 (setting control:listen).</summary>
    public IPEndPoint Endpoint { get; set; } = new(IPAddress.Loopback, DefaultPort);

    /// <summary>The default port: the node's libp2p port + 1.</summary>
    public const int DefaultPort = 4101;

    /// <summary>Largest request body the node reads. Default 64 KiB.</summary>
    public int MaxRequestLength { get; set; } = 64 * 1024;

    /// <summary>Largest response a client reads. Default 16 MiB.</summary>
    public int MaxResponseLength { get; set; } = 16 * 1024 * 1024;

    /// <summary>Largest blob (a module, a task's input) one <c>blob.put</c> may carry. Default 64 MiB + 64 KiB.</summary>
    public int MaxBlobBytes { get; set; } = (64 << 20) + (64 << 10);

    /// <summary>Blobs kept at once (least recently used go first). Default 64.</summary>
    public int MaxBlobs { get; set; } = 64;

    /// <summary>Bytes of blobs kept at once (least recently used go first). Default 256 MiB.</summary>
    public long MaxBlobStoreBytes { get; set; } = 256L << 20;

    /// <summary>Requests worked on at once; more wait in a queue of <see cref="MaxQueued"/>. Default 16.</summary>
    public int MaxClients { get; set; } = 16;

    /// <summary>
    /// Requests waiting for one of the <see cref="MaxClients"/> places; one more is answered at once with HTTP 503 and
    /// <c>Retry-After</c> (which <see cref="ControlClient"/> honours a few times). Default 1,024.
    /// </summary>
    public int MaxQueued { get; set; } = 1024;

    /// <summary>Seconds a refused client is asked to wait (<c>Retry-After</c>). Default 1.</summary>
    public int RetryAfterSeconds { get; set; } = 1;

    /// <summary>Times <see cref="ControlClient"/> retries a call the node refused as busy (503 with Retry-After). Default 5.</summary>
    public int BusyRetries { get; set; } = 5;

    /// <summary>
    /// Connections open at once: <see cref="MaxClients"/> + <see cref="MaxQueued"/> + 256 more that are only answered
    /// 503; past that Kestrel closes new connections at once.
    /// </summary>
    public long MaxConnections => (long)MaxClients + MaxQueued + 256;

    /// <summary>A client connection with no request for this long is closed. Default 60 s.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(60);
}

/// <summary>Handles one control method: its params (an empty object when absent) in, a result out.</summary>
public delegate ValueTask<JsonNode?> ControlHandler(JsonElement parameters, CancellationToken ct);

/// <summary>One connected peer as `potluck peers` shows it.</summary>
public sealed record PeerRow(
    string PeerId,
    string Direction,
    string Address,
    double? LatencyMs,
    string? Agent,
    IReadOnlyList<string> Protocols)
{
    /// <summary>Open connections to the peer (one row per peer however many).</summary>
    public int Connections { get; init; } = 1;
}

/// <summary>The result of the <c>peers</c> method.</summary>
public sealed record PeersResult(IReadOnlyList<PeerRow> Peers);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = false)]
[JsonSerializable(typeof(PeersResult))]
internal sealed partial class ControlJson : JsonSerializerContext;
