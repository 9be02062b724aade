using System.Text.Json;
using System.Text.Json.Nodes;
using Potluck.Protocol.Host;

namespace Potluck.Node.Control;

/// <summary>The control methods a running node answers: <c>peers</c> and <c>status</c>.</summary>
public static class NodeControl
{
    public const string PeersMethod = "peers";
    public const string StatusMethod = "status";

    public static void Register(ControlServer server, PotluckNode node)
    {
        server.Register(PeersMethod, (parameters, ct) => PeersAsync(node, parameters, ct));
        server.Register(StatusMethod, (_, _) => ValueTask.FromResult<JsonNode?>(JsonSerializer.SerializeToNode(Status(node), ControlJson.Default.StatusResult)));
    }

    /// <summary>
    /// Connected peers, one row per connection. With <c>{"ping":true}</c> (the default) each peer is pinged first,
    /// concurrently, so latencies are fresh; <c>{"ping":false}</c> answers at once from what is known.
    /// </summary>
    public static async ValueTask<JsonNode?> PeersAsync(PotluckNode node, JsonElement parameters, CancellationToken ct)
    {
        var ping = true;
        if (parameters.TryGetProperty("ping", out var p))
        {
            ping = p.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new ControlException(ControlErrorCode.BadRequest, "\"ping\" must be true or false"),
            };
        }
        var connections = node.Host.Connections.Where(c => !c.IsClosed).ToArray();
        if (ping)
        {
            await Task.WhenAll(connections.Select(c => c.RemotePeer).Distinct().Select(peer => node.MeasureLatencyAsync(peer, ct)));
        }
        return JsonSerializer.SerializeToNode(Peers(node, connections), ControlJson.Default.PeersResult);
    }

    public static PeersResult Peers(PotluckNode node, IEnumerable<IConnection> connections)
    {
        var rows = connections
            .Select(c =>
            {
                var info = node.Host.Peers.Get(c.RemotePeer);
                return new PeerRow(
                    c.RemotePeer.ToString(),
                    c.Direction == Direction.Inbound ? "inbound" : "outbound",
                    c.RemoteAddress.ToString(),
                    info?.Latency is { } l ? Math.Round(l.TotalMilliseconds, 3) : null,
                    info?.AgentVersion,
                    info?.Protocols ?? []);
            })
            .OrderBy(r => r.PeerId, StringComparer.Ordinal)
            .ToArray();
        return new PeersResult(rows);
    }

    public static StatusResult Status(PotluckNode node) => new(
        node.PeerId.ToString(),
        node.FullAddresses.Select(a => a.ToString()).ToArray(),
        node.Host.Connections.Count(c => !c.IsClosed),
        node.Dht.RoutingTableSize,
        node.JoinedTopics,
        node.Mdns is not null);
}
