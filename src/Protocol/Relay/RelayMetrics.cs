using System.Diagnostics.Metrics;
using Potluck.Protocol.AutoNat;

namespace Potluck.Protocol.Relay;

/// <summary>
/// Relay and AutoNAT counters on a node's meter (the one <see cref="Metrics.ProtocolInstruments"/> uses), read from the
/// services whenever the meter is collected: <c>potluck.relay.reservations</c> (held now), <c>potluck.relay.circuits</c>
/// (open now), <c>potluck.relay.circuits.opened</c>, <c>potluck.relay.bytes</c>, <c>potluck.relay.refused</c> (by what:
/// reservation, circuit, cut at limit), <c>potluck.autonat.requests</c> (by outcome) and <c>potluck.autonat.dial_data</c>.
/// </summary>
public static class RelayMetrics
{
    public static void Register(Meter meter, Func<RelayService?> relay, Func<AutoNatService?> autoNat)
    {
        static KeyValuePair<string, object?> Tag(string key, string value) => new(key, value);
        meter.CreateObservableGauge("potluck.relay.reservations", () => relay()?.ReservationCount ?? 0, "{reservation}",
            "Reservations this relay holds for others now");
        meter.CreateObservableGauge("potluck.relay.circuits", () => relay()?.CircuitCount ?? 0, "{circuit}",
            "Relayed connections open through this node now");
        meter.CreateObservableCounter("potluck.relay.circuits.opened", () => relay()?.CircuitsOpened ?? 0, "{circuit}",
            "Relayed connections opened through this node");
        meter.CreateObservableCounter("potluck.relay.bytes", () => relay()?.BytesRelayed ?? 0, "By",
            "Bytes carried for relayed connections, both directions");
        meter.CreateObservableCounter<long>("potluck.relay.refused", () => relay() is { } r
            ? new[] { new Measurement<long>(r.ReservationsRefused, Tag("what", "reservation")),
               new Measurement<long>(r.CircuitsRefused, Tag("what", "circuit")),
               new Measurement<long>(r.CircuitsCutAtLimit, Tag("what", "cut at limit")) }
            : Array.Empty<Measurement<long>>(), "{refusal}", "Reservations and circuits refused, and circuits cut at their data or time limit");
        meter.CreateObservableCounter<long>("potluck.autonat.requests", () => autoNat() is { } a
            ? new[] { new Measurement<long>(a.RequestsServed, Tag("outcome", "served")),
               new Measurement<long>(a.RequestsRejected, Tag("outcome", "rejected")) }
            : Array.Empty<Measurement<long>>(), "{request}", "AutoNAT dial requests from others, served (dialled back) or rejected for a limit");
        meter.CreateObservableCounter("potluck.autonat.dial_data", () => autoNat()?.DialDataReceived ?? 0, "By",
            "Dial data received before dialling an address other than the requester's (the amplification guard)");
    }
}
