using System.Diagnostics.Metrics;

namespace Potluck.Protocol.Dcutr;

/// <summary>
/// DCUtR counters on a node's meter, read from the service when the meter is collected: <c>potluck.dcutr.upgrades</c>
/// (upgrades this node drove, by outcome), <c>potluck.dcutr.dials</c> (hole-punch dials started),
/// <c>potluck.dcutr.predicted_dials</c> (of those, port-prediction dials against a port-changing NAT) and
/// <c>potluck.dcutr.refused</c> (DCUtR streams reset unread: not relayed, one already running, over the per-peer rate).
/// </summary>
public static class DcutrMetrics
{
    public static void Register(Meter meter, Func<DcutrService?> dcutr)
    {
        static KeyValuePair<string, object?> Tag(string key, string value) => new(key, value);
        meter.CreateObservableCounter<long>("potluck.dcutr.upgrades", () => dcutr() is { } d
            ? new[] { new Measurement<long>(d.Counts.Successes, Tag("outcome", "direct")),
               new Measurement<long>(d.Counts.Punches - d.Counts.Successes, Tag("outcome", "relayed")) }
            : Array.Empty<Measurement<long>>(), "{upgrade}", "Relayed connections this node tried to upgrade, by whether a direct connection resulted");
        meter.CreateObservableCounter("potluck.dcutr.dials", () => dcutr()?.DialsStarted ?? 0, "{dial}", "Hole-punch dials started");
        meter.CreateObservableCounter("potluck.dcutr.predicted_dials", () => dcutr()?.PredictedDials ?? 0, "{dial}",
            "Port-prediction dials started (SYNs to random ports of a port-changing peer, or dials from fresh ports to a port-keeping one)");
        meter.CreateObservableCounter("potluck.dcutr.refused", () => dcutr()?.Counts.Refused ?? 0, "{stream}",
            "DCUtR streams reset unread (not over a relayed connection, one already running, over the per-peer rate)");
    }
}
