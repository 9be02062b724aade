using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Hosting;

/// <summary>The checks <see cref="PotluckOptionsResolver"/> runs at start; each message names the key and what would be right.</summary>
public static class PotluckOptionsValidator
{
    public static IReadOnlyList<string> Validate(PotluckOptions o)
    {
        var problems = new List<string>();
        void Need(bool ok, string message)
        {
            if (!ok)
            {
                problems.Add(message);
            }
        }
        void Positive(TimeSpan value, string key) => Need(value > TimeSpan.Zero, $"'{key}' is {value}; it must be a positive duration such as 00:00:30");
        void AtLeast(long value, long min, string key) => Need(value >= min, $"'{key}' is {value}; it must be at least {min}");

        for (var i = 0; i < o.Listen.Count; i++)
        {
            Need(o.Listen[i].PeerId is null, $"'listen:{i}' is {o.Listen[i]}; a listen address has no /p2p/ part (the node adds its own)");
        }
        for (var i = 0; i < o.Bootstrap.Count; i++)
        {
            Need(o.Bootstrap[i].PeerId is not null,
                $"'bootstrap:{i}' is {o.Bootstrap[i]}; it needs the peer id at the end: {o.Bootstrap[i]}/p2p/12D3KooW… (potluck run prints it as 'Listening on …')");
        }
        for (var i = 0; i < o.Topics.Count; i++)
        {
            Need(!string.IsNullOrWhiteSpace(o.Topics[i]) && o.Topics[i].Length <= o.Gossip.MaxTopicLength,
                $"'topics:{i}' must be a topic name of 1 to {o.Gossip.MaxTopicLength} characters");
        }
        Need(o.DataDir is null || Path.IsPathRooted(o.DataDir), $"'dataDir' is '{o.DataDir}'; it must be an absolute path");

        var d = o.Discovery;
        Positive(d.RebootstrapInterval, "discovery:rebootstrapInterval");
        Positive(d.SaveInterval, "discovery:saveInterval");
        AtLeast(d.MaxRedialPeers, 0, "discovery:maxRedialPeers");
        AtLeast(d.MaxPersistedPeers, 0, "discovery:maxPersistedPeers");
        AtLeast(d.MaxPersistedAddressesPerPeer, 1, "discovery:maxPersistedAddressesPerPeer");
        AtLeast(d.MaxPersistedTopics, 0, "discovery:maxPersistedTopics");

        var h = o.Host;
        AtLeast(h.MaxConnections, 1, "host:maxConnections");
        AtLeast(h.MaxPendingInbound, 1, "host:maxPendingInbound");
        Positive(h.DialTimeout, "host:dialTimeout");
        Positive(h.HandshakeTimeout, "host:handshakeTimeout");
        Positive(h.StreamNegotiationTimeout, "host:streamNegotiationTimeout");
        Need(!string.IsNullOrWhiteSpace(o.Identify.AgentVersion) && o.Identify.AgentVersion.Length <= 256, "'identify:agentVersion' must be 1 to 256 characters");

        var g = o.Gossip;
        Need(g.DLow <= g.D && g.D <= g.DHigh && g.DLow >= 1, $"'gossip:dLow' ≤ 'gossip:d' ≤ 'gossip:dHigh' must hold with dLow ≥ 1 (now {g.DLow}, {g.D}, {g.DHigh})");
        Positive(g.HeartbeatInterval, "gossip:heartbeatInterval");
        Need(g.Protocols.Count > 0 && g.Protocols.All(p => p is Protocol.Gossipsub.GossipsubProtocol.V11 or Protocol.Gossipsub.GossipsubProtocol.V10 or Protocol.Gossipsub.GossipsubProtocol.Floodsub),
            $"'gossip:protocols' must list one or more of {Protocol.Gossipsub.GossipsubProtocol.V11}, {Protocol.Gossipsub.GossipsubProtocol.V10} and {Protocol.Gossipsub.GossipsubProtocol.Floodsub} (now {string.Join(", ", g.Protocols)})");

        var k = o.Kademlia;
        AtLeast(k.K, 1, "kademlia:k");
        AtLeast(k.Alpha, 1, "kademlia:alpha");
        Positive(k.RequestTimeout, "kademlia:requestTimeout");
        Positive(k.LookupTimeout, "kademlia:lookupTimeout");

        var c = o.Compute;
        if (c.Enabled && !(o.Protocols.Gossipsub && o.Protocols.Identify))
        {
            problems.Add("'compute:enabled' needs 'protocols:gossipsub' and 'protocols:identify' (advertisements travel by gossip)");
        }
        if (o.Topics.Count > 0 && !o.Protocols.Gossipsub)
        {
            problems.Add("'topics' needs 'protocols:gossipsub'");
        }
        if (o.Bootstrap.Count > 0 && !o.Protocols.Kademlia)
        {
            problems.Add("'bootstrap' needs 'protocols:kademlia' (the DHT is bootstrapped through those peers)");
        }
        if (c.Enabled)
        {
            Need(o.DataDir is not null, "'compute:enabled' needs a data directory ('dataDir', or --data-dir) for the ledger and the module store");
        }
        var p = c.Provider;
        AtLeast(p.Cores, 1, "compute:provider:cores");
        AtLeast(p.PricePerMegaFuel, 0, "compute:provider:pricePerMegaFuel");
        AtLeast(p.MemoryBytes, 1 << 20, "compute:provider:memoryBytes");
        AtLeast(p.MaxFuel, 1, "compute:provider:maxFuel");
        AtLeast(p.SpeedFuelPerSecond, 1, "compute:provider:speedFuelPerSecond");
        AtLeast(c.Client.MaxAttempts, 1, "compute:client:maxAttempts");
        Positive(c.Client.LeaseDeadline, "compute:client:leaseDeadline");
        Positive(c.Client.WaitForProviders, "compute:client:waitForProviders");
        var s = c.Sandbox;
        AtLeast(s.MaxMemoryBytes, 65536, "compute:sandbox:maxMemoryBytes");
        Positive(s.DefaultDeadline, "compute:sandbox:defaultDeadline");
        Positive(s.EpochTick, "compute:sandbox:epochTick");
        AtLeast(s.ModuleCacheCapacity, 1, "compute:sandbox:moduleCacheCapacity");
        AtLeast(s.MaxWasmStackBytes, 16 * 1024, "compute:sandbox:maxWasmStackBytes");
        AtLeast(c.Credits.InitialGrant, 0, "compute:credits:initialGrant");
        return problems;
    }

    /// <summary>The number of cores this process may use (the runtime reads the cgroup's CPU quota and the affinity mask).</summary>
    public static int MachineCores => Environment.ProcessorCount;

    /// <summary>Checks a home node's offer against this machine: more cores than the machine (or its cgroup) has is refused.</summary>
    public static IReadOnlyList<string> ValidateForThisMachine(PotluckOptions o)
    {
        var problems = new List<string>();
        if (o.Compute.Enabled && o.Compute.Provide && o.Compute.Provider.Cores > MachineCores)
        {
            problems.Add($"'compute:provider:cores' is {o.Compute.Provider.Cores} but this machine lets the node use {MachineCores} " +
                         $"(cores, or its cgroup's CPU quota): offer at most {MachineCores}");
        }
        return problems;
    }

    internal static bool HasPeer(Multiaddr address) => address.PeerId is not null;
}
