using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Potluck.Node.Control;

/// <summary>
/// The local control endpoint's wire format: UTF-8 JSON, one object per line ('\n'), over the Unix domain socket
/// <c>control.sock</c> in the data directory. A client sends requests, the node answers each in order:
/// <code>
/// → {"method":"peers","params":{}}
/// ← {"ok":true,"result":{...}}
/// ← {"ok":false,"error":{"code":"unknown_method","message":"..."}}
/// </code>
/// Lines are bounded (<see cref="ControlOptions"/>); a longer one is answered with <c>line_too_long</c> and the
/// connection closed. New commands add a method name and a handler; the envelope stays the same.
/// </summary>
public static class ControlProtocol
{
    /// <summary>The socket's file name inside the data directory.</summary>
    public const string SocketFileName = "control.sock";

    public static string SocketPath(string dataDir) => Path.Combine(Path.GetFullPath(dataDir), SocketFileName);

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
        _ => "internal",
    };

    public static ControlErrorCode FromWire(string? code) => code switch
    {
        "bad_request" => ControlErrorCode.BadRequest,
        "unknown_method" => ControlErrorCode.UnknownMethod,
        "line_too_long" => ControlErrorCode.LineTooLong,
        "busy" => ControlErrorCode.Busy,
        "unavailable" => ControlErrorCode.Unavailable,
        _ => ControlErrorCode.Internal,
    };
}

/// <summary>No node answers on the data directory's control socket.</summary>
public sealed class NodeNotRunningException : IOException
{
    public NodeNotRunningException(string dataDir)
        : base($"no node is running with data dir {dataDir}; start one with potluck run") => DataDir = dataDir;

    public string DataDir { get; }
}

/// <summary>Limits of the control endpoint.</summary>
public sealed class ControlOptions
{
    /// <summary>Longest request line the node reads. Default 64 KiB.</summary>
    public int MaxRequestLength { get; set; } = 64 * 1024;

    /// <summary>Longest response line a client reads. Default 16 MiB.</summary>
    public int MaxResponseLength { get; set; } = 16 * 1024 * 1024;

    /// <summary>Clients served at once; more are answered <c>busy</c>. Default 16.</summary>
    public int MaxClients { get; set; } = 16;

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
    IReadOnlyList<string> Protocols);

/// <summary>The result of the <c>peers</c> method.</summary>
public sealed record PeersResult(IReadOnlyList<PeerRow> Peers);

/// <summary>The result of the <c>status</c> method.</summary>
public sealed record StatusResult(
    string PeerId,
    IReadOnlyList<string> Addresses,
    int Connections,
    int RoutingTable,
    IReadOnlyList<string> Topics,
    bool Mdns);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = false)]
[JsonSerializable(typeof(PeersResult))]
[JsonSerializable(typeof(StatusResult))]
internal sealed partial class ControlJson : JsonSerializerContext;
