namespace Potluck.Node.Control;

/// <summary>
/// The control API's bounded work queue: at most <c>maxInFlight</c> requests are worked on at once and at most
/// <c>maxQueued</c> more wait for a place; any further request is refused at once (the server answers HTTP 503 with
/// Retry-After), so a burst of clients neither hangs nor grows memory without bound.
/// </summary>
internal sealed class ControlAdmission(int maxInFlight, int maxQueued)
{
    private readonly SemaphoreSlim _places = new(maxInFlight, maxInFlight);
    private int _admitted;
    private int _inFlight;
    private long _refused;

    public int InFlight => Volatile.Read(ref _inFlight);

    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Takes a place in flight or in the queue; false (and counted as refused) when both are full.</summary>
    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _admitted) > maxInFlight + maxQueued)
        {
            Interlocked.Decrement(ref _admitted);
            Interlocked.Increment(ref _refused);
            return false;
        }
        return true;
    }

    /// <summary>After <see cref="TryEnter"/>: waits for a place in flight.</summary>
    public async Task WaitAsync(CancellationToken ct)
    {
        await _places.WaitAsync(ct);
        Interlocked.Increment(ref _inFlight);
    }

    /// <summary>Gives back what <see cref="TryEnter"/> (and, when <paramref name="entered"/>, <see cref="WaitAsync"/>) took.</summary>
    public void Leave(bool entered)
    {
        if (entered)
        {
            Interlocked.Decrement(ref _inFlight);
            _places.Release();
        }
        Interlocked.Decrement(ref _admitted);
    }
}
