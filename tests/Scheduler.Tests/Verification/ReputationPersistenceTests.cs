using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Tests.Verification;

public class ReputationPersistenceTests
{
    private static readonly PeerId Cheater = PrivateKey.FromRandom(new Random(1)).PeerId;
    private static readonly PeerId Honest = PrivateKey.FromRandom(new Random(2)).PeerId;
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "potluck-reputation-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, true);
        }
    }

    [Test]
    public void Database_SaveThenLoad_ReturnsTheSameRecords_RefusedFirst()
    {
        using (var db = ReputationDatabase.Open(_dir))
        {
            db.Save([new(Honest, new ProviderRecord(3, 7, 2, 1, null)), new(Cheater, new ProviderRecord(0, 1, 0, 0, "fraud"))]);
        }
        using var again = ReputationDatabase.Open(_dir);
        var loaded = again.Load(10);
        Assert.That(loaded, Has.Count.EqualTo(2));
        Assert.That(loaded[0].Key, Is.EqualTo(Cheater), "refusals come first: they survive a small load limit");
        Assert.That(loaded[0].Value, Is.EqualTo(new ProviderRecord(0, 1, 0, 0, "fraud")));
        Assert.That(loaded[1].Value, Is.EqualTo(new ProviderRecord(3, 7, 2, 1, null)));
        Assert.That(again.Load(1).Single().Key, Is.EqualTo(Cheater));
    }

    [Test]
    public void Database_LongReason_IsCutOnSave()
    {
        using var db = ReputationDatabase.Open(_dir);
        db.Save([new(Cheater, new ProviderRecord(0, 0, 0, 0, new string('x', 5000)))]);
        Assert.That(db.Load(10).Single().Value.RefusedReason, Has.Length.EqualTo(ReputationDatabase.MaxReasonLength));
    }

    [Test]
    public void Database_DamagedFile_IsSetAsideAndStartsEmpty()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllBytes(Path.Combine(_dir, ReputationDatabase.FileName), new byte[8192].Select((_, i) => (byte)(i * 7)).ToArray());
        using var db = ReputationDatabase.Open(_dir);
        Assert.That(db.RecoveredFromCorruption, Is.True);
        Assert.That(db.Load(10), Is.Empty);
        Assert.That(File.Exists(Path.Combine(_dir, ReputationDatabase.FileName + ".corrupt")), Is.True);
    }

    [Test]
    public void Store_TakeChanges_ReturnsEachChangedRecordOnce_AndRestoredRecordsAreNotChanges()
    {
        var store = new ReputationStore();
        store.Restore([new(Honest, new ProviderRecord(1, 1, 0, 0, null))]);
        Assert.That(store.TakeChanges(), Is.Empty);
        Assert.That(store.Get(Honest).Verified, Is.EqualTo(1));
        store.RecordVerified(Honest);
        store.RecordVerified(Honest);
        store.Refuse(Cheater, "fraud");
        var changes = store.TakeChanges().ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.That(changes.Keys, Is.EquivalentTo(new[] { Honest, Cheater }));
        Assert.That(changes[Honest].Verified, Is.EqualTo(3));
        Assert.That(store.TakeChanges(), Is.Empty);
    }

    [Test]
    [CancelAfter(30_000)]
    public async Task Journal_SavesARefusalAtOnce_CountsOnTheInterval_AndEverythingOnDispose(CancellationToken ct)
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var store = new ReputationStore();
        var journal = new ReputationJournal(store, ReputationDatabase.Open(_dir), time, NullLogger<ReputationJournal>.Instance, TimeSpan.FromSeconds(30));
        journal.Start();
        using var reader = ReputationDatabase.Open(_dir);

        store.RecordVerified(Honest);
        Assert.That(reader.Load(10), Is.Empty, "counts wait for the interval");
        store.Refuse(Cheater, "fraud proof confirmed");
        Assert.That(reader.Load(10).Select(kv => kv.Key), Does.Contain(Cheater), "a refusal is saved at once");

        store.RecordVerified(Honest);
        var flushed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        journal.Flushed += () => flushed.TrySetResult();
        time.Advance(TimeSpan.FromSeconds(30));
        await flushed.Task.WaitAsync(ct);
        Assert.That(reader.Load(10).Single(kv => kv.Key == Honest).Value.Verified, Is.EqualTo(2), "counts saved on the interval");

        store.RecordFailure(Honest);
        await journal.DisposeAsync();
        Assert.That(reader.Load(10).Single(kv => kv.Key == Honest).Value.Failures, Is.EqualTo(1), "dispose saves what is left");

        var restarted = new ReputationStore();
        await using var again = new ReputationJournal(restarted, ReputationDatabase.Open(_dir), time, NullLogger<ReputationJournal>.Instance);
        again.Start();
        Assert.That(restarted.IsRefused(Cheater), Is.True);
        Assert.That(restarted.Get(Honest), Is.EqualTo(new ProviderRecord(2, 2, 0, 1, null)));
    }
}
