using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Advertising;

/// <summary>
/// Decides when the local provider publishes, and signs what it publishes. Pure: <see cref="Poll"/> takes the
/// current content and <c>now</c>, and returns the envelope to publish when the content changed (no sooner than
/// <see cref="AdvertisementOptions.MinPublishGap"/> after the last one) or <see cref="AdvertisementOptions.PublishInterval"/>
/// has passed. Sequences are at least the issue time in Unix milliseconds, so they keep rising across restarts.
/// </summary>
public sealed class AdvertisementIssuer
{
    private readonly PrivateKey _key;
    private readonly AdvertisementOptions _options;
    private byte[]? _lastContent;
    private DateTimeOffset _lastPublished = DateTimeOffset.MinValue;
    private bool _changePending;

    public AdvertisementIssuer(PrivateKey key, AdvertisementOptions options)
    {
        _key = key;
        _options = options;
    }

    /// <summary>The sequence of the last advertisement issued; 0 before the first.</summary>
    public ulong Sequence { get; private set; }

    /// <summary>
    /// While the last <see cref="Poll"/> found the content changed inside <see cref="AdvertisementOptions.MinPublishGap"/>: until
    /// this time no poll can publish (the change goes out with the poll at <see cref="NextPublishAt"/>, as the content is then);
    /// otherwise <see cref="DateTimeOffset.MinValue"/>.
    /// </summary>
    public DateTimeOffset QuietUntil =>
        _changePending ? _lastPublished + (_options.MinPublishGap < _options.PublishInterval ? _options.MinPublishGap : _options.PublishInterval)
        : DateTimeOffset.MinValue;

    /// <summary>When <see cref="Poll"/> should next be called if nothing changes.</summary>
    public DateTimeOffset NextPublishAt =>
        _lastContent is null ? DateTimeOffset.MinValue
        : _lastPublished + (_changePending ? _options.MinPublishGap : _options.PublishInterval);

    /// <summary>
    /// Returns a signed envelope to publish now, or null. <paramref name="content"/>'s peer id, sequence and
    /// times are ignored: the issuer fills them in.
    /// </summary>
    public byte[]? Poll(Advertisement content, DateTimeOffset now)
    {
        var normalized = content with { PeerId = [], Sequence = 0, IssuedAtUnixMs = 0, ExpiresAtUnixMs = 0 };
        var bytes = MessagePackSerializer.Serialize(normalized, MessagePackSerializerOptions.Standard);
        var changed = _lastContent is null || !bytes.AsSpan().SequenceEqual(_lastContent);
        var due = now >= _lastPublished + _options.PublishInterval
            || (changed && now >= _lastPublished + _options.MinPublishGap);
        if (!due)
        {
            _changePending = changed;
            return null;
        }
        _changePending = false;
        var issued = now.ToUnixTimeMilliseconds();
        Sequence = Math.Max(Sequence + 1, (ulong)Math.Max(issued, 0));
        _lastContent = bytes;
        _lastPublished = now;
        var ad = content with
        {
            PeerId = _key.PeerId.ToBytes(),
            Sequence = Sequence,
            IssuedAtUnixMs = issued,
            ExpiresAtUnixMs = (now + _options.Lifetime).ToUnixTimeMilliseconds(),
        };
        return AdvertisementCodec.Sign(ad, _key);
    }
}
