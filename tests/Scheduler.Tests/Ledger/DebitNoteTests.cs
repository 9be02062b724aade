using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// Debit notes (<see cref="DebitNoteSlicing"/>): a provider's signed note per slice of fuel, checked by the requester
/// (<see cref="DebitNoteBook"/>) and paid by a receipt for the slice; the notes and the final receipt sum to one receipt.
/// </summary>
public class DebitNoteTests
{
    private static readonly byte[] LeaseId = [1, 2, 3, 4, 5, 6, 7, 8];
    private const long Slice = 1L << 20;

    private static LeaseTerms Terms(long fuelLimit = 10 * Slice + 12_345, long price = 7_777, long slice = Slice) => new()
    {
        RequestId = 0x0102030405060708,
        Provider = Provider.PeerId.ToBytes(),
        Requester = Requester.PeerId.ToBytes(),
        FuelLimit = fuelLimit,
        PricePerMegaFuel = price,
        DebitNoteFuel = slice,
    };

    private static DebitNote Note(int index, long paidBefore, long price = 7_777, ulong? fuel = null, byte[]? lease = null)
    {
        var cumulative = fuel ?? (ulong)(index + 1) * Slice;
        Receipt.TryComputeAmount(cumulative, (ulong)price, out var amount);
        return new DebitNote
        {
            LeaseId = lease ?? LeaseId,
            Requester = Requester.PeerId.ToBytes(),
            Provider = Provider.PeerId.ToBytes(),
            SliceIndex = index,
            CumulativeFuel = cumulative,
            PricePerMillionFuel = (ulong)price,
            CumulativeAmount = amount,
            PaidBefore = paidBefore,
            TimestampUnixMs = Epoch.ToUnixTimeMilliseconds(),
        };
    }

    private static SignedDebitNote Sign(DebitNote note, PrivateKey? key = null) => SignedDebitNote.Create(note, key ?? Provider);

    private static DebitNoteBook Book(LeaseTerms? terms = null, int maxNotes = 4096) =>
        new(terms ?? Terms(), LeaseId, Requester.PeerId, Provider.PeerId, maxNotes);

    [TestCase(1L, 1L << 20, 10 * (1L << 20) + 12_345)]
    [TestCase(7_777L, 1L << 20, 10 * (1L << 20) + 12_345)]
    [TestCase(999_999L, 3_000_001L, 40_000_000L)]
    [TestCase(10_000_000L, 1L << 20, 5 * (1L << 20))]
    public void NotesAndFinalReceipt_SumExactlyToOneReceiptForTheSameFuel(long price, long slice, long fuel)
    {
        var terms = Terms(fuel + 1, price, slice);
        var book = new DebitNoteBook(terms, LeaseId, Requester.PeerId, Provider.PeerId, 4096);
        long paid = 0;
        var notes = 0;
        for (var i = 0; (ulong)(i + 1) * (ulong)slice <= (ulong)fuel && (i + 1) * slice < terms.FuelLimit; i++)
        {
            Receipt.TryComputeAmount((ulong)(i + 1) * (ulong)slice, (ulong)price, out var cumulative);
            var note = Sign(new DebitNote
            {
                LeaseId = LeaseId, Requester = Requester.PeerId.ToBytes(), Provider = Provider.PeerId.ToBytes(), SliceIndex = i,
                CumulativeFuel = (ulong)(i + 1) * (ulong)slice, PricePerMillionFuel = (ulong)price, CumulativeAmount = cumulative, PaidBefore = book.PaidAmount,
            });
            Assert.That(book.Check(note), Is.EqualTo(DebitNoteVerdict.Valid));
            var payment = SignedReceipt.Create(note.Payment(Epoch), Requester);
            Assert.That(SignedReceipt.Decode(payment.EnvelopeBytes, Options).IsValid, "a note's payment is an ordinary, checkable receipt");
            Assert.That(payment.Check(note.Expectation()), Is.EqualTo(VerifyStatus.Valid));
            paid += payment.Receipt.Amount;
            book.Paid(note);
            notes++;
        }
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseId, Requester, Provider, (ulong)fuel), Provider);
        var final = SignedReceipt.Create(Receipt.For(attestation, (ulong)price, Epoch, paidBefore: book.PaidAmount), Requester);
        var single = Receipt.For(attestation, (ulong)price, Epoch);

        Assert.That(notes, Is.GreaterThan(0));
        Assert.That(book.PaidAmount, Is.EqualTo(paid));
        Assert.That(paid + final.Receipt.Amount, Is.EqualTo(single.Amount), "notes + remainder = one receipt, to the micro-credit");
        Assert.That(final.Check(ReceiptExpectation.For(attestation, (ulong)price) with { PaidBefore = paid }), Is.EqualTo(VerifyStatus.Valid));
        Assert.That(SignedReceipt.Decode(final.EnvelopeBytes, Options).IsValid);
    }

    [Test]
    public void FinalReceipt_ClaimingMorePaidBeforeThanTheNotesWere_IsRefused()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseId, Requester, Provider, 5 * Slice), Provider);
        var underpaying = SignedReceipt.Create(Receipt.For(attestation, 7_777, Epoch, paidBefore: 30), Requester);
        Assert.That(underpaying.Check(ReceiptExpectation.For(attestation, 7_777) with { PaidBefore = 20 }), Is.EqualTo(VerifyStatus.AmountMismatch));
        Assert.Throws<ArgumentOutOfRangeException>(() => Receipt.For(attestation, 7_777, Epoch, paidBefore: long.MaxValue));
    }

    [Test, Category("Adversarial")]
    public void Book_RefusesReplayedSkippedInflatedOverpricedAndForeignNotes()
    {
        var book = Book();
        var first = Sign(Note(0, 0));
        Assert.That(book.Check(first), Is.EqualTo(DebitNoteVerdict.Valid));
        book.Paid(first);

        Assert.That(book.Check(first), Is.EqualTo(DebitNoteVerdict.OutOfOrder), "a slice already paid, replayed");
        Assert.That(book.Check(Sign(Note(0, first.Note.CumulativeAmount))), Is.EqualTo(DebitNoteVerdict.OutOfOrder), "index 0 again, re-signed");
        Assert.That(book.Check(Sign(Note(2, first.Note.CumulativeAmount))), Is.EqualTo(DebitNoteVerdict.OutOfOrder), "a slice skipped");
        Assert.That(book.Check(Sign(Note(1, first.Note.CumulativeAmount, fuel: 2 * Slice + 1))), Is.EqualTo(DebitNoteVerdict.WrongFuel), "more fuel than the boundary");
        Assert.That(book.Check(Sign(Note(1, first.Note.CumulativeAmount, fuel: 3 * Slice))), Is.EqualTo(DebitNoteVerdict.WrongFuel), "fuel of a later slice");
        Assert.That(book.Check(Sign(Note(1, first.Note.CumulativeAmount, price: 7_778))), Is.EqualTo(DebitNoteVerdict.WrongPrice), "more than the agreed price");
        Assert.That(book.Check(Sign(Note(1, 0))), Is.EqualTo(DebitNoteVerdict.WrongPaidBefore), "asks again for what was paid");
        Assert.That(book.Check(Sign(Note(1, first.Note.CumulativeAmount, lease: [8, 7, 6, 5, 4, 3, 2, 1]))), Is.EqualTo(DebitNoteVerdict.NotThisLease));
        Assert.That(book.NextIndex, Is.EqualTo(1));
        Assert.That(book.PaidAmount, Is.EqualTo(first.Note.CumulativeAmount), "nothing refused was paid");

        var second = Sign(Note(1, first.Note.CumulativeAmount));
        Assert.That(book.Check(second), Is.EqualTo(DebitNoteVerdict.Valid));
    }

    [Test, Category("Adversarial")]
    public void Book_RefusesANoteAtTheFuelLimit_AndBeyondTheMostNotes()
    {
        var terms = Terms(fuelLimit: 2 * Slice);
        var book = Book(terms);
        var first = Sign(Note(0, 0));
        book.Paid(first);
        Assert.That(book.Check(Sign(Note(1, first.Note.CumulativeAmount))), Is.EqualTo(DebitNoteVerdict.WrongFuel), "the final receipt pays up to the limit");

        var capped = Book(maxNotes: 1);
        capped.Paid(Sign(Note(0, 0)));
        Assert.That(capped.Check(Sign(Note(1, first.Note.CumulativeAmount))), Is.EqualTo(DebitNoteVerdict.TooMany));
    }

    [Test, Category("Adversarial")]
    public void Decode_RefusesForgedSignerAndInflatedAmount()
    {
        // Signed by a stranger in the provider's name.
        var forged = Seal(Note(0, 0), Stranger, SignedDebitNote.Domain);
        Assert.That(SignedDebitNote.Decode(forged, Options).Status, Is.EqualTo(VerifyStatus.WrongSigner));
        // The provider's own signature, an amount above fuel × price.
        var note = Note(0, 0);
        var inflated = new DebitNote
        {
            LeaseId = note.LeaseId, Requester = note.Requester, Provider = note.Provider, SliceIndex = 0,
            CumulativeFuel = note.CumulativeFuel, PricePerMillionFuel = note.PricePerMillionFuel, CumulativeAmount = note.CumulativeAmount + 1,
        };
        Assert.That(SignedDebitNote.Decode(Seal(inflated, Provider, SignedDebitNote.Domain), Options).Status, Is.EqualTo(VerifyStatus.AmountMismatch));
        // A receipt's signature is not a note's.
        Assert.That(SignedDebitNote.Decode(Seal(note, Provider, SignatureDomains.Receipt), Options).Status, Is.EqualTo(VerifyStatus.BadSignature));
        Assert.That(SignedDebitNote.Decode(Sign(note).EnvelopeBytes, Options).IsValid);
    }

    [Test]
    public void SliceLeaseIds_AreDistinctPerSlice_AndParseBack()
    {
        var a = DebitNoteSlicing.SliceLeaseId(LeaseId, 0);
        var b = DebitNoteSlicing.SliceLeaseId(LeaseId, 1);
        Assert.That(a, Is.Not.EqualTo(b));
        Assert.That(Receipt.ComputeId(a, Provider.PeerId, Requester.PeerId), Is.Not.EqualTo(Receipt.ComputeId(b, Provider.PeerId, Requester.PeerId)));
        Assert.That(DebitNoteSlicing.TryParseSliceLeaseId(b, out var id, out var index), Is.True);
        Assert.That((id, index), Is.EqualTo((0x0102030405060708UL, 1)));
        Assert.That(DebitNoteSlicing.TryParseSliceLeaseId(LeaseId, out _, out _), Is.False, "a lease's own id is no slice");
    }

    [Test]
    public void Slicing_OnlyWhenAskedAndAboveTheSlice_AndOffersAreChecked()
    {
        var options = new LeaseOptions { DebitNoteFuel = Slice };
        var request = new LeaseRequest { FuelLimit = 3 * Slice, AcceptsDebitNotes = true };
        Assert.That(DebitNoteSlicing.SliceFor(request, options), Is.EqualTo(Slice));
        Assert.That(DebitNoteSlicing.SliceFor(request with { AcceptsDebitNotes = false }, options), Is.Zero, "older requesters are never sent notes");
        Assert.That(DebitNoteSlicing.SliceFor(request with { FuelLimit = Slice }, options), Is.Zero, "short leases are paid once");
        Assert.That(DebitNoteSlicing.SliceFor(request, options with { DebitNoteFuel = 0 }), Is.Zero, "0 turns notes off");
        Assert.That(DebitNoteSlicing.RefusesUnsliced(request with { AcceptsDebitNotes = false }, options), Does.Contain("debit notes"),
            "a long lease without notes would be unbounded unpaid work");
        Assert.That(DebitNoteSlicing.RefusesUnsliced(request with { AcceptsDebitNotes = false, FuelLimit = Slice }, options), Is.Null);
        Assert.That(DebitNoteSlicing.RefusesUnsliced(request, options), Is.Null);

        Assert.That(DebitNoteSlicing.CheckOffered(request, Terms(3 * Slice), options), Is.Null);
        Assert.That(DebitNoteSlicing.CheckOffered(request with { AcceptsDebitNotes = false }, Terms(3 * Slice), options), Is.Not.Null);
        Assert.That(DebitNoteSlicing.CheckOffered(request, Terms(3 * Slice, slice: 1), options with { MaxDebitNotesPerLease = 100 }), Does.Contain("debit notes"));
    }

    [Test]
    public void LedgerPair_PaysEachSliceOnce_AndBothSidesAgree()
    {
        using var dir = new TempDir();
        using var requester = LedgerFactory.Open(dir.Sub("requester"), Requester);
        using var provider = LedgerFactory.Open(dir.Sub("provider"), Provider);
        var providerStart = provider.Balance();
        var requesterStart = requester.Balance();
        var book = Book();
        for (var i = 0; i < 3; i++)
        {
            var note = Sign(Note(i, book.PaidAmount));
            var slice = DebitNoteSlicing.SliceLeaseId(LeaseId, i);
            Assert.That(provider.RecordOwed(slice, Requester.PeerId, note.Note.Due), Is.EqualTo(LedgerResult.Owed));
            var payment = SignedReceipt.Create(note.Payment(Epoch), Requester);
            Assert.That(requester.ReservePayment(slice, Provider.PeerId, payment.Receipt.Amount), Is.EqualTo(LedgerResult.Reserved));
            Assert.That(requester.Settle(payment), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(provider.RecordEarned(payment), Is.EqualTo(LedgerResult.Recorded));
            book.Paid(note);

            // The same slice paid again, re-signed later: one receipt id, counted once.
            var again = SignedReceipt.Create(note.Payment(Epoch.AddSeconds(1)), Requester);
            Assert.That(provider.RecordEarned(again), Is.Not.EqualTo(LedgerResult.Recorded));
            Assert.That(requester.Settle(again), Is.Not.EqualTo(LedgerResult.Recorded));
        }
        Assert.That(provider.Balance() - providerStart, Is.EqualTo(book.PaidAmount));
        Assert.That(requesterStart - requester.Balance(), Is.EqualTo(book.PaidAmount));
        Assert.That(provider.Unpaid(Requester.PeerId), Is.Zero);
    }
}
