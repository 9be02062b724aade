using Microsoft.Extensions.DependencyInjection;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Potluck.Node.Home;
using Potluck.Protocol.Host;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Credits;

namespace Potluck.Node.Control;

/// <summary>
/// The control methods a running node answers: <c>status</c>, <c>peers</c>, <c>leases</c>, <c>ledger</c>,
/// <c>config.get</c>, <c>config.set</c>, <c>config.list</c> (and <c>submit</c>, registered by the CLI's daemon).
/// Amounts are micro-credits on the wire; the CLI shows them as credits.
/// </summary>
public static class NodeControl
{
    public const string StatusMethod = "status";
    public const string PeersMethod = "peers";
    public const string LeasesMethod = "leases";
    public const string LedgerMethod = "ledger";

    public static void Register(ControlServer server, PotluckNode node, NodeSettings? settings = null)
    {
        var started = node.Runtime.Time.GetUtcNow();
        server.Register(PeersMethod, (parameters, ct) => PeersAsync(node, parameters, ct));
        server.Register(StatusMethod, (_, _) => ValueTask.FromResult<JsonNode?>(Status(node, started)));
        server.Register(LeasesMethod, (_, _) => ValueTask.FromResult<JsonNode?>(Leases(node)));
        server.Register(LedgerMethod, (p, _) => ValueTask.FromResult<JsonNode?>(Ledger(node, Int(p, "count", 20, 1, 10_000))));
        ChainControl.Register(server, node);
    }

    internal static int Int(JsonElement parameters, string name, int fallback, int min, int max)
    {
        if (!parameters.TryGetProperty(name, out var v))
        {
            return fallback;
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) && i >= min && i <= max
            ? i
            : throw new ControlException(ControlErrorCode.BadRequest, $"\"{name}\" must be a whole number from {min} to {max}");
    }

    /// <summary>
    /// Connected peers, one row per peer (its connections counted, the first one's direction and address shown). With
    /// <c>{"ping":true}</c> (the default) each peer is pinged first, concurrently, so latencies are fresh.
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
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(ct);
            bounded.CancelAfter(TimeSpan.FromSeconds(5));
            await Task.WhenAll(connections.Select(c => c.RemotePeer).Distinct().Select(peer => node.MeasureLatencyAsync(peer, bounded.Token)));
        }
        return JsonSerializer.SerializeToNode(Peers(node, connections), ControlJson.Default.PeersResult);
    }

    public static PeersResult Peers(PotluckNode node, IEnumerable<IConnection> connections)
    {
        var rows = connections
            .GroupBy(c => c.RemotePeer)
            .Select(g =>
            {
                var first = g.OrderBy(c => c.Direction == Direction.Outbound ? 0 : 1).First();
                var info = node.Host.Peers.Get(g.Key);
                return new PeerRow(
                    g.Key.ToString(),
                    g.Select(c => c.Direction).Distinct().Count() > 1 ? "both" : first.Direction == Direction.Inbound ? "inbound" : "outbound",
                    first.RemoteAddress.ToString(),
                    info?.Latency is { } l ? Math.Round(l.TotalMilliseconds, 3) : null,
                    info?.AgentVersion,
                    info?.Protocols ?? [])
                { Connections = g.Count() };
            })
            .OrderBy(r => r.PeerId, StringComparer.Ordinal)
            .ToArray();
        return new PeersResult(rows);
    }

    /// <summary>Everything `potluck status` shows, and why no work arrives when none does.</summary>
    public static JsonObject Status(PotluckNode node, DateTimeOffset started)
    {
        var now = node.Runtime.Time.GetUtcNow();
        var connections = node.Host.Connections.Where(c => !c.IsClosed).ToArray();
        var peers = connections.Select(c => c.RemotePeer).Distinct().Count();
        var inbound = connections.Count(c => c.Direction == Direction.Inbound);
        var listen = node.Host.ListenAddresses;
        var compute = node.Compute;
        var provider = compute?.Provider;
        var availability = node.Preferences?.Current;
        var status = new JsonObject
        {
            ["peer_id"] = node.PeerId.ToString(),
            ["addresses"] = new JsonArray(node.FullAddresses.Select(a => (JsonNode)a.ToString()).ToArray()),
            ["uptime_seconds"] = Math.Round((now - started).TotalSeconds),
            ["reachability"] = Reachability(listen, inbound),
            ["peers"] = peers,
            ["connections"] = connections.Length,
            ["inbound_connections"] = inbound,
            ["routing_table"] = node.Options.Protocols.Kademlia ? node.Dht.RoutingTableSize : 0,
            ["swarm_key"] = node.Options.SwarmKey is not null,
            ["nat"] = Nat(node),
        };
        if (provider is not null)
        {
            var capacity = provider.Capacity;
            var leases = provider.Leases();
            status["provider"] = new JsonObject
            {
                ["cores"] = capacity.Cores,
                ["cores_in_use"] = capacity.CoresInUse,
                ["memory_bytes"] = capacity.MemoryBytes,
                ["disk_bytes_used"] = compute!.Disk.UsedBytes,
                ["disk_bytes_limit"] = compute.Disk.LimitBytes,
                ["disk_files"] = (long)compute.Disk.Files,
                ["leases_refused_disk_full"] = provider.RefusedForDisk,
                ["price_micro_credits_per_megafuel"] = node.Options.Compute.Provider.PricePerMegaFuel,
                ["state"] = availability is null ? "working" : StateName(availability.State),
                ["reason"] = availability?.Reason ?? "working",
                ["state_since"] = availability?.Since.ToString("O", CultureInfo.InvariantCulture),
                ["others_cpu_percent"] = availability?.OthersCpuPercent is { } o ? Math.Round(o, 1) : null,
                ["leases_running"] = leases.Count(l => l.Running),
                ["leases_held"] = leases.Count,
                ["leases_completed"] = node.Preferences?.LeasesCompleted ?? 0,
                ["leases_cancelled_for_owner"] = node.Preferences?.LeasesCancelled ?? 0,
            };
        }
        if (compute is not null)
        {
            var totals = compute.Ledger.Totals(now - TimeSpan.FromHours(1));
            status["credits"] = new JsonObject
            {
                ["balance"] = compute.Ledger.Balance(),
                ["available"] = compute.Ledger.Available(),
                ["earned_last_hour"] = totals.EarnedSince,
                ["spent_last_hour"] = totals.SpentSince,
                ["earned_total"] = totals.Earned,
                ["spent_total"] = totals.Spent,
                ["receipts_earned"] = totals.EarnedCount,
                ["receipts_spent"] = totals.SpentCount,
            };
            status["providers_known"] = compute.Client.Providers().Count;
        }
        status["why_no_work"] = WhyNoWork(node, peers, availability);
        return status;
    }

    /// <summary>AutoNAT's verdicts (public, private or unknown per address, and the node's) and the relays in use.</summary>
    private static JsonObject Nat(PotluckNode node)
    {
        var autoNat = node.Services.GetService<Potluck.Protocol.AutoNat.AutoNatService>();
        var relay = node.Services.GetService<Potluck.Protocol.Relay.RelayService>();
        var circuit = node.Services.GetService<Potluck.Protocol.Relay.CircuitTransport>();
        string Name(Potluck.Protocol.AutoNat.Reachability r) => r.ToString().ToLowerInvariant();
        return new JsonObject
        {
            ["reachability"] = autoNat is null ? "unknown" : Name(autoNat.Reachability),
            ["addresses"] = new JsonArray((autoNat?.Addresses ?? []).Select(a => (JsonNode)new JsonObject
            {
                ["address"] = a.Address.ToString(),
                ["status"] = Name(a.Status),
                ["servers_reachable"] = a.Reachable,
                ["servers_unreachable"] = a.Unreachable,
                ["observed"] = a.Observed,
            }).ToArray()),
            ["relays"] = new JsonArray((circuit?.Reservations ?? []).Select(r => (JsonNode)new JsonObject
            {
                ["relay"] = r.Relay.ToString(),
                ["expires"] = r.Expires.ToString("O", CultureInfo.InvariantCulture),
            }).ToArray()),
            ["serving_hop"] = relay?.IsServing ?? false,
        };
    }

    internal static string StateName(WorkState state) => state switch
    {
        WorkState.Working => "working",
        WorkState.IdlePaused => "idle-paused",
        WorkState.OutsideHours => "outside-hours",
        WorkState.OnBattery => "on-battery",
        _ => state.ToString().ToLowerInvariant(),
    };

    private static string Reachability(IReadOnlyList<Multiaddr> listen, int inbound)
    {
        if (listen.Count == 0)
        {
            return "not listening: other nodes cannot dial this one (it dials out only)";
        }
        var text = string.Join(" ", listen.Select(a => a.ToString()));
        var loopbackOnly = listen.All(a => a.ToString().StartsWith("/ip4/127.", StringComparison.Ordinal) || a.ToString().StartsWith("/ip6/::1/", StringComparison.Ordinal));
        if (loopbackOnly)
        {
            return $"loopback only ({text}): only nodes on this machine can dial it";
        }
        return inbound > 0
            ? $"reachable: {inbound} inbound connection{(inbound == 1 ? "" : "s")} now"
            : $"listening on {text}, no inbound connection yet (behind a NAT or firewall, forward the TCP port to this machine)";
    }

    /// <summary>Null when work can arrive; otherwise the first reason it cannot.</summary>
    private static string? WhyNoWork(PotluckNode node, int peers, Availability? availability)
    {
        var provider = node.Compute?.Provider;
        if (node.Compute is null)
        {
            return "compute is off on this node (compute:enabled = false)";
        }
        if (provider is null)
        {
            return "this node does not provide (compute:provide = false, or --no-provide)";
        }
        if (availability is not null && availability.State != WorkState.Working)
        {
            return availability.Reason;
        }
        if (peers == 0)
        {
            return "no peers connected: give a --bootstrap address of another node, or start nodes on this network (mDNS)" +
                   (node.Options.SwarmKey is not null ? "; with a swarm key only nodes with the same key can connect" : "");
        }
        if (provider.Leases().Count == 0 && (node.Preferences?.LeasesCompleted ?? 0) == 0)
        {
            return $"nobody has asked yet: {peers} peer{(peers == 1 ? "" : "s")} connected; requesters find this node by its advertisement " +
                   $"(price {node.Options.Compute.Provider.PricePerMegaFuel} micro-credits per million fuel, at most {node.Options.Compute.Provider.MaxFuel:N0} fuel a task)";
        }
        return null;
    }

    /// <summary>The leases this provider holds now.</summary>
    public static JsonObject Leases(PotluckNode node)
    {
        var provider = node.Compute?.Provider;
        var rows = new JsonArray();
        foreach (var l in provider?.Leases() ?? [])
        {
            rows.Add(new JsonObject
            {
                ["request_id"] = l.RequestId.ToString(CultureInfo.InvariantCulture),
                ["requester"] = l.Requester.ToString(),
                ["running"] = l.Running,
                ["fuel_limit"] = l.FuelLimit,
                ["memory_limit_bytes"] = l.MemoryLimitBytes,
                ["price_micro_credits_per_megafuel"] = l.PricePerMegaFuel,
                ["deadline"] = l.Deadline.ToString("O", CultureInfo.InvariantCulture),
            });
        }
        return new JsonObject { ["providing"] = provider is not null, ["leases"] = rows };
    }

    /// <summary>Balance, available and the newest entries.</summary>
    public static JsonObject Ledger(PotluckNode node, int count)
    {
        var ledger = node.Compute?.Ledger ?? throw new ControlException(ControlErrorCode.Unavailable, "compute is off on this node: it has no ledger");
        return LedgerJson(node.PeerId.ToString(), ledger, count);
    }

    public static JsonObject LedgerJson(string peerId, CreditLedger ledger, int count)
    {
        var entries = new JsonArray();
        foreach (var e in ledger.Recent(count))
        {
            entries.Add(new JsonObject
            {
                ["seq"] = e.Sequence,
                ["at"] = e.RecordedAt.ToString("O", CultureInfo.InvariantCulture),
                ["kind"] = e.Kind.ToString().ToLowerInvariant(),
                ["amount"] = e.SignedAmount,
                ["counterparty"] = e.Kind == LedgerEntryKind.Grant ? null : e.Counterparty.ToString(),
            });
        }
        return new JsonObject
        {
            ["peer_id"] = peerId,
            ["unit"] = "micro-credits",
            ["balance"] = ledger.Balance(),
            ["available"] = ledger.Available(),
            ["entries"] = entries,
        };
    }
}
