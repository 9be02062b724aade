using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Metrics;

/// <summary>A step of one lease, on either side, as <see cref="LeaseTimeline"/> stamps it (in this order along the path).</summary>
public enum LeaseMark
{
    /// <summary>Requester: the submission was made (the job's start; the same for each lease the job tries).</summary>
    Submitted,
    /// <summary>Requester: a provider was chosen and this lease begins.</summary>
    Chosen,
    /// <summary>Requester: the most the lease may cost is reserved in the ledger.</summary>
    Reserved,
    /// <summary>Requester: the lease request is written and flushed on the stream.</summary>
    RequestSent,
    /// <summary>Provider: the request was read.</summary>
    RequestReceived,
    /// <summary>Provider: the request was admitted or refused (its answer queued).</summary>
    Admitted,
    /// <summary>Provider: the offer (or refusal) is written and flushed.</summary>
    OfferSent,
    /// <summary>Requester: the offer (or refusal) was read.</summary>
    OfferReceived,
    /// <summary>Requester: the accept (with the input) is written and flushed.</summary>
    AcceptSent,
    /// <summary>Provider: the accept was read.</summary>
    AcceptReceived,
    /// <summary>Provider: the input is complete and the run is queued.</summary>
    RunQueued,
    /// <summary>Provider: the run started on a pool thread.</summary>
    RunStarted,
    /// <summary>Provider: the sandbox returned.</summary>
    RunFinished,
    /// <summary>Provider: what the requester owes is recorded (durably) and the result is queued.</summary>
    OwedRecorded,
    /// <summary>Provider: the result is written and flushed.</summary>
    ResultSent,
    /// <summary>Requester: the result was read.</summary>
    ResultReceived,
    /// <summary>Requester: the lease's runner returned its outcome to the job.</summary>
    LeaseEnded,
    /// <summary>Requester: the attestation is checked.</summary>
    Verified,
    /// <summary>Requester: the receipt is settled (durably) in the ledger.</summary>
    Settled,
    /// <summary>Requester: the receipt is written and flushed on the lease stream.</summary>
    ReceiptSent,
    /// <summary>Provider: the receipt was read.</summary>
    ReceiptReceived,
    /// <summary>Provider: the receipt is recorded (durably) and its acknowledgement queued.</summary>
    ReceiptRecorded,
    /// <summary>Requester: the acknowledgement was read.</summary>
    ReceiptAcked,
}

/// <summary>
/// A diagnostic: per-lease timestamps (<see cref="Stopwatch"/> ticks, in memory) at each step of the lease path on both sides,
/// keyed by request id, so a benchmark running requester and providers in one process can print where a lease's time goes
/// (<see cref="Report"/>). Off unless <see cref="Enabled"/> is set (LeaseBench sets it with LEASEBENCH_TIMELINE=1): then a
/// mark costs one dictionary lookup. Process-wide on purpose (both sides of a lease stamp the same record); never on in a node.
/// </summary>
public static class LeaseTimeline
{
    private static readonly int Count = Enum.GetValues<LeaseMark>().Length;
    private static readonly ConcurrentDictionary<ulong, long[]> Leases = new();

    /// <summary>Whether marks are kept (default off).</summary>
    public static bool Enabled { get; set; }

    /// <summary>Stamps <paramref name="mark"/> for lease <paramref name="requestId"/> now (the first stamp of each mark is kept).</summary>
    public static void Mark(ulong requestId, LeaseMark mark)
    {
        if (Enabled)
        {
            MarkAt(requestId, mark, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Stamps <paramref name="mark"/> at <paramref name="timestamp"/> (<see cref="Stopwatch.GetTimestamp"/>).</summary>
    public static void MarkAt(ulong requestId, LeaseMark mark, long timestamp)
    {
        if (!Enabled || requestId == 0)
        {
            return;
        }
        var marks = Leases.GetOrAdd(requestId, static _ => new long[Count]);
        Interlocked.CompareExchange(ref marks[(int)mark], timestamp, 0);
    }

    /// <summary>The mark a message stamps when it is sent (<paramref name="sent"/>) or read, on the side that does so; null for none.</summary>
    public static void Message(LeaseMessage message, bool sent, bool provider)
    {
        if (!Enabled)
        {
            return;
        }
        LeaseMark? mark = (message, sent, provider) switch
        {
            (LeaseRequest, true, false) => LeaseMark.RequestSent,
            (LeaseRequest, false, true) => LeaseMark.RequestReceived,
            (LeaseOffer or LeaseReject, true, true) => LeaseMark.OfferSent,
            (LeaseOffer or LeaseReject, false, false) => LeaseMark.OfferReceived,
            (LeaseAccept, true, false) => LeaseMark.AcceptSent,
            (LeaseAccept, false, true) => LeaseMark.AcceptReceived,
            (LeaseResult, true, true) => LeaseMark.ResultSent,
            (LeaseResult, false, false) => LeaseMark.ResultReceived,
            (LeaseReceipt, true, false) => LeaseMark.ReceiptSent,
            (LeaseReceipt, false, true) => LeaseMark.ReceiptReceived,
            (LeaseReceiptAck, false, false) => LeaseMark.ReceiptAcked,
            _ => null,
        };
        if (mark is { } m)
        {
            Mark(message.RequestId, m);
        }
    }

    /// <summary>Forgets every lease stamped so far (before the phase to measure).</summary>
    public static void Clear() => Leases.Clear();

    /// <summary>
    /// Writes, for each mark, how many leases reached it and the gap from the mark before it in the same lease (the nearest
    /// earlier mark that lease has): p50, p90, p99 in ms. Leases refused (an offer that never led to an accept) are counted
    /// apart: their marks stop at <see cref="LeaseMark.OfferReceived"/>.
    /// </summary>
    public static void Report(TextWriter output)
    {
        var all = Leases.Values.ToArray();
        var completed = all.Where(m => m[(int)LeaseMark.ResultReceived] != 0).ToArray();
        output.WriteLine($"Lease timeline: {all.Length} leases stamped, {completed.Length} with a result, {all.Length - completed.Length} without (refused or lost); gaps below over those with a result");
        output.WriteLine("| step | leases | from the step before: p50 ms | p90 ms | p99 ms | from Chosen: p50 ms |");
        output.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (var i = 0; i < Count; i++)
        {
            var gaps = new List<double>();
            var fromChosen = new List<double>();
            foreach (var m in completed)
            {
                if (m[i] == 0)
                {
                    continue;
                }
                for (var j = i - 1; j >= 0; j--)
                {
                    if (m[j] != 0)
                    {
                        gaps.Add(Stopwatch.GetElapsedTime(m[j], m[i]).TotalMilliseconds);
                        break;
                    }
                }
                if (m[(int)LeaseMark.Chosen] != 0 && i > (int)LeaseMark.Chosen)
                {
                    fromChosen.Add(Stopwatch.GetElapsedTime(m[(int)LeaseMark.Chosen], m[i]).TotalMilliseconds);
                }
            }
            var reached = completed.Count(m => m[i] != 0);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {(LeaseMark)i} | {reached} | {P(gaps, 50):0.00} | {P(gaps, 90):0.00} | {P(gaps, 99):0.00} | {P(fromChosen, 50):0.00} |"));
        }
        var refused = all.Where(m => m[(int)LeaseMark.ResultReceived] == 0 && m[(int)LeaseMark.OfferReceived] != 0).ToArray();
        if (refused.Length > 0)
        {
            var waits = refused.Select(m => Stopwatch.GetElapsedTime(m[(int)LeaseMark.Chosen], m[(int)LeaseMark.OfferReceived]).TotalMilliseconds).ToList();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Leases answered without a result (refused): {refused.Length}, Chosen → answer p50 {P(waits, 50):0.00} ms"));
        }
    }

    private static double P(List<double> values, int percentile)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }
        values.Sort();
        return values[Math.Min(values.Count - 1, Math.Max(0, (int)Math.Ceiling(percentile / 100.0 * values.Count) - 1))];
    }
}
